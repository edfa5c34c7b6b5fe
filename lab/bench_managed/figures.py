"""The managed benchmark's figures from what it recorded: the provider's waits (from the
stand-in's request log), a takeover (from the writer's lines), pgbench's throughput."""

from __future__ import annotations

import re

POLL_S = 15  # the provider's ticker for a new cluster or read-only node (issue20-api.md §2, §7)


def provider_waits(log: list[dict]) -> list[dict]:
    """For each cluster or read-only node a POST made (answered 201): from that POST to the
    first poll of it answered `online`, with the polls it took and the 412s before the POST
    (the provider retries a read-only node's POST until its cluster is online)."""
    waits = []
    for index, entry in enumerate(log):
        made = entry.get("answered")
        if entry["method"] != "POST" or entry.get("status") != 201 or not made:
            continue
        later = log[index + 1 :]
        polls = [e for e in later if e["method"] == "GET" and answered_id(e) == made["id"]]
        online = next((e for e in polls if e["answered"]["status"] == "online"), None)
        refused = [e for e in log[:index] if e["path"] == entry["path"] and e.get("status") == 412]
        waits.append({
            "kind": made["kind"], "engine": made.get("engine"), "id": made["id"],
            "path": entry["path"], "posted": entry["t"],
            "online_seen": online["t"] if online else None,
            "seconds": round(online["t"] - entry["t"], 2) if online else None,
            "polls": polls.index(online) + 1 if online else len(polls),
            "refused_before": len(refused),
        })  # fmt: skip
    return waits


def answered_id(entry: dict) -> str | None:
    return (entry.get("answered") or {}).get("id")


def waits_in_series(waits: list[dict]) -> dict:
    """The provider's own waits on the run's critical path: the PostgreSQL cluster's, then its
    read-only node's (created only once the cluster is online), beside their floor (one 15 s
    poll each)."""
    [cluster] = [w for w in waits if w["kind"] == "database" and w["engine"] == "pg"]
    [node] = [w for w in waits if w["kind"] == "replica"]
    if not node["path"].startswith(f"/v2/databases/{cluster['id']}/"):
        raise ValueError(f"the read-only node {node['id']} is not of cluster {cluster['id']}")
    return {
        "pg_cluster_wait_s": cluster["seconds"],
        "read_only_node_wait_s": node["seconds"],
        "read_only_node_refused_posts": node["refused_before"],
        "provider_waits_in_series_s": round(cluster["seconds"] + node["seconds"], 2),
        "provider_waits_floor_s": 2 * POLL_S,
    }


def takeover_figures(lines: list[dict], killed: float) -> dict:
    """What one takeover did to the writer: `lines` are its JSON lines ({"committed": n, "at"},
    {"error", "at"}, then {"present": [n, ...]} read after it), `killed` the primary's
    power-off (time.time(), the same clock). A write acknowledged before the kill counts as
    committed; the first commit after the first error since the kill is the write that
    succeeds again."""
    commits = [e for e in lines if "committed" in e]
    before = {e["committed"] for e in commits if e["at"] < killed}
    error = next((e for e in lines if "error" in e and e["at"] >= killed), None)
    if error is None:
        raise ValueError("the writer saw no error after the kill")
    resumed = next((e for e in commits if e["at"] > error["at"]), None)
    if resumed is None:
        raise ValueError("no write succeeded after the kill")
    [present] = [set(e["present"]) for e in lines if "present" in e]
    return {
        "writes_resumed_s": round(resumed["at"] - killed, 2),
        "first_error_after_kill_s": round(error["at"] - killed, 2),
        "committed_before_kill": len(before),
        "of_them_present": len(before & present),
        "rows_lost": len(before - present),
        "first_error": error["error"],
    }


TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)$", re.MULTILINE)


def pgbench_tps(output: str) -> float:
    """The throughput pgbench reports (PostgreSQL 15's output)."""
    found = TPS.search(output)
    if not found:
        raise ValueError(f"no tps line in pgbench's output: {output[-400:]!r}")
    return float(found.group(1))


def resource_summary(output: str) -> str:
    """The "Resources:" counts of `pulumi up`'s output, e.g. "20 unchanged"."""
    block = re.search(r"^Resources:\n((?: +\S.*\n?)+)", output, re.MULTILINE)
    lines = block.group(1).splitlines() if block else []
    return ", ".join(line.strip().lstrip("+~-").strip() for line in lines)
