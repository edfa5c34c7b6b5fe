"""Prometheus in a lab test: the built exporters checked, Debian's Prometheus over a stack's
`alert_rules` and `prometheus_targets` (scraping and evaluating every second), and reading its
API. Shared by test_exporters.py and test_alert_faults.py."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from labkit import wait_until

from lab import namespaces as lab_hosts
from lab.s3 import LabS3
from mastodon_data.monitoring import builds

BUILT = ("pgbouncer_exporter", "ssl_exporter")


@contextmanager
def built_exporters() -> Iterator[None]:
    """The upstream builds where `make exporters` left them (exportersHome's default): the
    program ships them into each lab host's own /usr/local/bin."""
    for name in BUILT:
        if not builds.binary_path(builds.home(""), name).is_file():
            pytest.fail(f"{name} is not built: run `make exporters` (make test does)")
    yield


def monitored_with_backups(lab: lab_hosts.Lab, store: LabS3, bucket: str) -> tuple[dict, dict]:
    """The settings and secrets a stack adds for exporters (the lab's operator address as
    monitoringSources) and backups into the lab's S3 `store`."""
    settings = {
        "monitoringSources": [f"{lab.operator_address}/32"],
        "backups": True, "backupBucket": bucket, "backupEndpoint": store.endpoint,
        "backupAccessKeyId": f"{lab.prefix}-lab-key", "backupCaCert": store.ca_cert.read_text(),
    }  # fmt: skip
    stack_secrets = {
        "monitorPassword": secrets.token_urlsafe(24),
        "backupCipherPassphrase": secrets.token_urlsafe(32),
        "backupSecretAccessKey": secrets.token_urlsafe(30),
    }
    return settings, stack_secrets


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def scrape_url(group: dict) -> str:
    labels = group["labels"]
    path = labels.get("__metrics_path__", "/metrics")
    params = {k.removeprefix("__param_"): v for k, v in labels.items() if k.startswith("__param_")}
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return f"http://{group['targets'][0]}{path}{query}"


def samples(text: str) -> dict[str, list[str]]:
    """metric name -> the sample lines of that name."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            found.setdefault(line.split("{")[0].split()[0], []).append(line)
    return found


def write_targets(workdir: Path, groups: list[dict]) -> None:
    """The file_sd file, replaced whole (a rename), as an operator's pipeline writes it from
    `pulumi stack output prometheus_targets --json`: Prometheus never reads half a file."""
    partial = workdir / "targets.json.new"
    partial.write_text(json.dumps(groups))
    partial.rename(workdir / "targets.json")


@contextmanager
def running_prometheus(workdir: Path, rules: str, groups: list[dict], port: int) -> Iterator[str]:
    """Debian's Prometheus on 127.0.0.1:`port` with `rules` and the file_sd `groups`, scraping
    and evaluating every second; yields its API's base URL."""
    workdir.mkdir()
    (workdir / "rules.yml").write_text(rules)
    write_targets(workdir, groups)
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{workdir / 'rules.yml'}]\n"
        "scrape_configs:\n"
        "  - job_name: mastodon-data\n"
        f"    file_sd_configs: [{{files: [{workdir / 'targets.json'}], refresh_interval: 5s}}]\n"
    )
    argv = ["/usr/bin/prometheus", f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"]  # fmt: skip
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        wait_until(lambda: ready(f"http://127.0.0.1:{port}/-/ready"), 30, "Prometheus ready")
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def reload(prometheus: str) -> None:
    """Prometheus reads its configuration and rules again (as on SIGHUP)."""
    base = prometheus.removesuffix("/api/v1")
    urllib.request.urlopen(urllib.request.Request(f"{base}/-/reload", method="POST"), timeout=30)


def ready(url: str) -> bool:
    try:
        get(url)
    except OSError as exc:
        raise AssertionError(f"{url}: {exc}") from None
    return True


def api(prometheus: str, path: str) -> dict:
    return json.loads(get(f"{prometheus}/{path}"))["data"]


def alert_state(prometheus: str, name: str, **labels: str) -> str | None:
    """The alert's state (firing before pending) among its alerts with `labels`, None when it
    is neither."""
    alerts = api(prometheus, "alerts")["alerts"]
    states = {
        a["state"]
        for a in alerts
        if a["labels"]["alertname"] == name and labels.items() <= a["labels"].items()
    }
    return "firing" if "firing" in states else (states.pop() if states else None)


def query(prometheus: str, promql: str) -> dict[str, float]:
    """An instant query's result: the `server` label of each series -> its value."""
    found = api(prometheus, f"query?{urllib.parse.urlencode({'query': promql})}")["result"]
    return {r["metric"].get("server", ""): float(r["value"][1]) for r in found}
