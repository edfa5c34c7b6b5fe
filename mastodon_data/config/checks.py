"""The one message format, the field table's reader, and the small checks the domains share.

A problem line reads `<project>:<key> = <value>: <what>. Fix: <command>`. A simple setting is a
`Field`: its type and default come from Pulumi.yaml, the rest (choices, pattern, range, the
example its fix sets) is data here; `Validation.read` checks one against its value.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mastodon_data.config.project import DEFAULTS, PROJECT, TYPES

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PRIVATE_V4 = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
PRIVATE_V6 = ipaddress.ip_network("fc00::/7")
DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def set_command(key: str, example: Any) -> str:
    return f"pulumi config set {PROJECT}:{key} {example}"


def set_path_command(path: str, example: Any) -> str:
    return f"pulumi config set --path '{PROJECT}:{path}' {example}"


def did_you_mean(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"did you mean {close[0]}? " if close else ""


@dataclass(frozen=True)
class Field:
    """One setting whose check needs no other setting.

    A string passes when it is among `choices`, matches `pattern` (a regex, or a function that
    says yes or no) and `check` returns None (else it returns what is wrong); for an array the
    same holds for each entry; an integer must lie in `allowed`. A string whose default is ""
    may stay empty (the feature is off). The fix sets `example` (None: the default), with
    `item_example` in an entry's fix, and `note` after the fix of a refused value.
    """

    key: str
    example: Any = None
    choices: Collection[str] = ()
    pattern: re.Pattern[str] | Callable[[str], Any] | None = None
    check: Callable[[str], str | None] | None = None
    allowed: range | None = None
    what: str = ""  # why `choices` or `pattern` refuse a value; {choices} lists them
    note: str = ""
    item_example: str | None = None

    def problem(self, text: str) -> str | None:
        """What is wrong with `text`, or None."""
        if self.choices and text not in self.choices:
            return (self.what or "not one of {choices}").format(choices=", ".join(self.choices))
        if self.pattern is not None:
            accepts = getattr(self.pattern, "fullmatch", self.pattern)
            if not accepts(text):
                return self.what
        return self.check(text) if self.check else None

    def fix(self, example: Any, path: str | None = None) -> str:
        command = set_path_command(path, example) if path else set_command(self.key, example)
        return f"{command} ({self.note})" if self.note else command


class Validation:
    """A stack's values over Pulumi.yaml's defaults, and the problems found in them."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.lines: list[str] = []
        self.keys: set[str] = set()  # keys with a problem
        self.warnings: list[str] = []

    def value(self, key: str) -> Any:
        given = self.raw.get(key)
        return DEFAULTS.get(key) if given is None else given

    def add(self, key: str, shown: str, what: str, fix: str) -> None:
        self.keys.add(key)
        self.lines.append(f"{PROJECT}:{key} = {shown}: {what}. Fix: {fix}")

    def bad(self, key: str, value: Any, what: str, fix: str) -> None:
        self.add(key, repr(value), what, fix)

    def ok(self, *keys: str) -> bool:
        """No problem reported for `keys` (nor for an entry of them)."""
        return not any(k == key or k.startswith(f"{key}[") for key in keys for k in self.keys)

    def read(self, fields: Iterable[Field], **examples: Any) -> dict[str, Any]:
        """Each field's value (None when it has the wrong type); `examples` overrides fixes."""
        return {field.key: self.read_field(field, examples.get(field.key)) for field in fields}

    def read_field(self, field: Field, example: Any = None) -> Any:
        key, value, kind = field.key, self.value(field.key), TYPES[field.key]
        example = next(e for e in (example, field.example, DEFAULTS[key]) if e is not None)
        if kind == "integer":
            return self.integer(key, value, field.allowed, field.fix(example))
        if kind == "boolean":
            return self.boolean(key, value, field.fix(example))
        if kind == "array":
            return self.text_list(field, value, example)
        text = self.text(key, value, example)
        if text is not None and (text or DEFAULTS[key] != ""):
            why = field.problem(text)
            if why:
                self.bad(key, text, why, field.fix(example))
        return text

    def text(self, key: str, value: Any, example: Any) -> str | None:
        if isinstance(value, str):
            return value
        self.bad(key, value, "not a string", set_command(key, example))
        return None

    def integer(self, key: str, value: Any, allowed: range, fix: str) -> int | None:
        """An int in `allowed`; numeric strings count (config values often arrive as text)."""
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            number = int(value)
        if number is None or number not in allowed:
            what = f"not an integer from {allowed.start} to {allowed.stop - 1}"
            self.bad(key, value, what, fix)
            return None
        return number

    def boolean(self, key: str, value: Any, fix: str) -> bool | None:
        """A bool; "true"/"false" count (config values often arrive as text)."""
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.bad(key, value, "not true or false", fix)
        return None

    def text_list(self, field: Field, value: Any, example: Any) -> tuple[str, ...] | None:
        key = field.key
        if not isinstance(value, list | tuple) or not all(isinstance(i, str) for i in value):
            self.bad(key, value, "not a list of strings", set_path_command(f"{key}[0]", example))
            return None
        item_example = field.item_example or example
        for index, item in enumerate(value):
            why = field.problem(item)
            if why:
                path = f"{key}[{index}]"
                self.bad(path, item, why, field.fix(item_example, path))
        return tuple(value)

    def cidr_entries(
        self,
        name: str,
        values: Iterable[str],
        example: str,
        opens: tuple[str, str],
        bare_address_ok: bool = False,
    ) -> list[tuple[str, str, Network]]:
        """(key, text, network) of each entry of the list `name` that is a CIDR narrower than /0;
        the others are reported: not a CIDR (fix: `example`), or /0 (`opens` = what it would open
        to everyone, and the fix)."""
        entries = []
        for index, text in enumerate(values):
            key = f"{name}[{index}]"
            network = parse_network(f"{text}/32" if bare_address_ok and "/" not in text else text)
            if isinstance(network, str):
                self.bad(key, text, network, set_path_command(key, example))
            elif network.prefixlen == 0:
                self.bad(key, text, f"opens {opens[0]}", set_path_command(key, opens[1]))
            else:
                entries.append((key, text, network))
        return entries


def parse_network(text: str) -> Network | str:
    """The network, or why `text` is not a strict CIDR."""
    if "/" not in text:
        return "not a CIDR (no /prefix)"
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            return f"has host bits set (the network is {ipaddress.ip_network(text, strict=False)})"
        return "not a valid CIDR"


def is_private(network: Network) -> bool:
    if network.version == 6:
        return network.subnet_of(PRIVATE_V6)
    return any(network.subnet_of(private) for private in PRIVATE_V4)


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or labels[-1].isdigit():  # all-digit last label: a mistyped IP address
        return False
    return all(DNS_LABEL.fullmatch(label) for label in labels)
