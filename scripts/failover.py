#!/usr/bin/env python3
"""Failover for hosts-mode stacks: promote a chosen replica, repoint the other replicas to it and
print the new outputs; later, bring the failed primary back as a replica (pg_rewind).

    # the primary is lost: promote mlab-h2, write the new topology, apply it
    python3 scripts/failover.py --stack-file Pulumi.lab.yaml --secrets-file F \\
        --known-hosts K promote mlab-h2 --write Pulumi.lab.failover.yaml
    # the old primary is back: rewind it onto the new primary as a replica
    python3 scripts/failover.py --stack-file Pulumi.lab.failover.yaml --secrets-file F \\
        --known-hosts K rejoin mlab-h1 --write Pulumi.lab.failover.yaml

The new stack outputs (JSON, as `pulumi stack output --json --show-secrets`) go to stdout, so
`| python3 scripts/render_env.py` writes the new .env.production; a summary goes to stderr.
With the Pulumi engine, set the same `hosts`/`replicaCount` in the stack and run `pulumi up`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import apply_hosts  # noqa: E402

from components import plan  # noqa: E402
from components.config import PROJECT, ConfigError, parse_settings  # noqa: E402
from components.stack_file import read_stack_file  # noqa: E402

HOSTS, REPLICAS = f"{PROJECT}:hosts", f"{PROJECT}:replicaCount"


def reordered(document: dict, first: list[str], count: int) -> dict:
    """The stack document with `first` hosts leading (primary, then replicas) and the count."""
    config = dict(document["config"])
    hosts = config[HOSTS]
    by_name = {h["name"]: h for h in hosts}
    config[HOSTS] = [by_name[n] for n in first] + [h for h in hosts if h["name"] not in first]
    config[REPLICAS] = count
    return {**document, "config": config}


def promote(args, secrets: dict, settings, document: dict) -> tuple[dict, dict]:
    nodes = plan.nodes_from_hosts(settings)
    target = next((n for n in nodes if n.name == args.name and n.role == "replica"), None)
    if target is None:
        replicas = [n.name for n in nodes if n.role == "replica"]
        raise ConfigError(f"{args.name} is not a replica of this stack (replicas: {replicas})")
    with tempfile.TemporaryDirectory() as private:
        key = Path(private) / "key"
        key.touch(mode=0o600)
        key.write_text(secrets["sshPrivateKey"])
        start = time.monotonic()
        report = plan.parse_report(
            apply_hosts.run_step(
                plan.promote_step(settings, target), secrets, key, args.known_hosts
            )
        )
    survivors = [n.name for n in nodes if n.role == "replica" and n.name != args.name]
    # The old primary becomes a spare: it rejoins only when the operator asks (`rejoin`).
    new = reordered(document, [args.name, *survivors], len(survivors))
    return new, {"promoted": args.name, "promote_s": round(time.monotonic() - start, 2), **report}


def rejoin(args, settings, document: dict) -> tuple[dict, dict]:
    nodes = plan.nodes_from_hosts(settings)
    if args.name in {n.name for n in nodes}:
        raise ConfigError(f"{args.name} is already the primary or a replica of this stack")
    names = [n.name for n in nodes]
    new = reordered(document, [*names, args.name], len(names))
    return new, {"rejoining": args.name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-file", type=Path, required=True)
    parser.add_argument("--secrets-file", type=Path, required=True)
    parser.add_argument("--known-hosts", type=Path)
    parser.add_argument("--write", type=Path, help="where to write the new stack file")
    parser.add_argument("action", choices=["promote", "rejoin"])
    parser.add_argument("name", help="the replica to promote, or the old primary to rejoin")
    args = parser.parse_args(argv)
    secrets = json.loads(args.secrets_file.read_text())
    document = yaml.safe_load(args.stack_file.read_text())
    try:
        raw, _ = read_stack_file(args.stack_file)
        settings = parse_settings(raw, set(secrets))
        if settings.mode != "hosts":
            raise ConfigError(
                "failover.py drives hosts-mode stacks (droplets: same steps, "
                "through `pulumi up` after `pg_promote`)"
            )
        if args.action == "promote":
            new, summary = promote(args, secrets, settings, document)
            reseed = frozenset()
        else:
            new, summary = rejoin(args, settings, document)
            reseed = frozenset({args.name})
        out = args.write or args.stack_file.with_name(args.stack_file.stem + ".failover.yaml")
        out.write_text(yaml.safe_dump(new, sort_keys=False))
        start = time.monotonic()
        outputs = apply_hosts.apply(out, secrets, args.known_hosts, reseed)
        summary["apply_s"] = round(time.monotonic() - start, 2)
    except (ConfigError, apply_hosts.StepFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env = {k: ("[secret]" if k.endswith("PASS") else v) for k, v in outputs["mastodon_env"].items()}
    print(
        json.dumps({**summary, "stack_file": str(out), "mastodon_env": env}, indent=2),
        file=sys.stderr,
    )
    print(json.dumps(outputs, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
