"""The exporters step's probe (host/exporters.py): an up metric of 0 is scraped again within
START_WAIT, as postgres_exporter 0.17 reports pg_up 0 once after the server restarted."""

import exporters
import pytest
from common import HostError

PARAMS = {"monitor_user": "mastodon_monitor"}


def scrapes(monkeypatch, *answers: str) -> list[str]:
    """exporters.scrape answers these texts in turn (the last one from then on)."""
    served = []

    def scrape(job, params):
        served.append(job)
        return answers[min(len(served), len(answers)) - 1]

    monkeypatch.setattr(exporters, "scrape", scrape)
    monkeypatch.setattr(exporters, "POLL", 0.001)
    return served


def test_a_stale_connection_reported_once_is_scraped_again(monkeypatch):
    served = scrapes(monkeypatch, "pg_up 0\n", "pg_up 1\n")
    assert exporters.probe("postgres", PARAMS) == "ok"
    assert served == ["postgres", "postgres"]


def test_an_up_metric_that_stays_0_fails_the_step_after_start_wait(monkeypatch):
    served = scrapes(monkeypatch, "pgbouncer_up 0\n")
    monkeypatch.setattr(exporters, "START_WAIT", 0.05)
    with pytest.raises(HostError, match=r"pgbouncer exporter answers but pgbouncer_up is \['0'\]"):
        exporters.probe("pgbouncer", PARAMS)
    assert len(served) > 1


def test_an_exporter_without_an_up_metric_is_scraped_once(monkeypatch):
    served = scrapes(monkeypatch, "ssl_probe_success 1\n")
    assert exporters.probe("ssl", PARAMS) == "ok"
    assert served == ["ssl"]
