"""Every lab the tests and tools declare owns its name, networks and state directory; every
test file its name.

Labs run side by side (make test runs several test files at once): two labs on one subnet
route each other's traffic to the wrong hosts, which shows up only when they happen to overlap
in time.
"""

import ast
import ipaddress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_CLASSES = {"Lab", "StandInLab"}
NETWORK_FIELDS = ("subnet", "public_network", "vpc_pool")


def literal(node: ast.expr):
    """A constant, or the default of os.environ.get(NAME, default), or the argument of Path()."""
    if isinstance(node, ast.Call):
        return literal(node.args[-1])
    return ast.literal_eval(node)


def literal_keywords(call: ast.Call) -> dict:
    return {
        k.arg: literal(k.value)
        for k in call.keywords
        if k.arg in ("prefix", "state_dir", *NETWORK_FIELDS)
    }


def declared_labs() -> list[tuple[str, dict]]:
    labs = []
    for path in sorted([*ROOT.glob("lab/**/*.py"), *ROOT.glob("tests/lab/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) in LAB_CLASSES
                and node.keywords
            ):
                labs.append((f"{path.relative_to(ROOT)}:{node.lineno}", literal_keywords(node)))
    return labs


def networks(fields: dict) -> list[ipaddress.IPv4Network]:
    found = [fields[name] for name in ("subnet", "public_network") if name in fields]
    found += list(fields.get("vpc_pool", ()))
    return [ipaddress.ip_network(n) for n in found]


def test_the_scan_finds_the_labs_it_must_keep_apart():
    places = [place for place, _ in declared_labs()]
    assert len(places) >= 20, places
    assert any(p.startswith("tests/lab/test_lab.py") for p in places)
    assert any(p.startswith("tests/lab/test_lag_and_reconnect.py") for p in places)


def test_no_two_labs_share_a_prefix_or_a_state_directory():
    labs = declared_labs()
    for field in ("prefix", "state_dir"):
        seen = {}
        for place, fields in labs:
            value = fields[field]
            assert value not in seen, f"{field} {value} at {place} and {seen[value]}"
            seen[value] = place


def test_no_two_labs_overlap_in_any_network():
    labs = [(place, networks(fields)) for place, fields in declared_labs()]
    for i, (place, nets) in enumerate(labs):
        for other_place, other_nets in labs[i + 1 :]:
            for net in nets:
                clash = [o for o in other_nets if net.overlaps(o)]
                assert not clash, f"{place} ({net}) overlaps {other_place} ({clash[0]})"


def test_no_two_test_files_share_a_name():
    """pytest imports test files by their name (rootdir-relative packages are not used here):
    two files of one name in different folders stop the whole run at collection."""
    names = [p.name for p in ROOT.glob("tests/**/test_*.py")]
    assert len(names) > 50 and len(names) == len(set(names)), sorted(
        n for n in set(names) if names.count(n) > 1
    )


def test_the_files_the_suite_starts_first_exist():
    """tests/conftest.py names the longest files; a renamed one would silently start last."""
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    (longest,) = [n.value for n in tree.body if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "LONGEST"]  # fmt: skip
    names = [c.value for c in ast.walk(longest) if isinstance(c, ast.Constant)
             and isinstance(c.value, str) and c.value.startswith(("lab/", "engine/"))]  # fmt: skip
    assert len(names) >= 10
    assert [n for n in names if not (ROOT / "tests" / f"{n}.py").exists()] == []
