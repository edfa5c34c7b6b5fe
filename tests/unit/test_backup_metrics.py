"""The backup metrics (host/backup_metrics.py): what `pgbackrest info --output=json` becomes, the
textfile node_exporter reads (exact lines, 0644 whatever the umask, written by a rename), and
pgbackrest's failures. The lab proves it against a real repository (tests/lab/test_exporters.py).
"""

from __future__ import annotations

import json
import os
import stat

import backup_metrics

FULL = {"type": "full", "timestamp": {"start": 1700000000, "stop": 1700000100}}
DIFF = {"type": "diff", "timestamp": {"start": 1700003500, "stop": 1700003600}}
INCR = {"type": "incr", "timestamp": {"start": 1700007100, "stop": 1700007200}}
COMPLETION = "pgbackrest_backup_last_completion_timestamp_seconds"
OLD_FULL = {"type": "full", "timestamp": {"start": 1690000000, "stop": 1690000100}}


def info(*backups, code=0):
    return {"name": "mastodon", "status": {"code": code, "message": "ok"}, "backup": list(backups)}


def test_each_type_is_the_newest_backup_that_counts_as_one():
    values = backup_metrics.metric_values(info(OLD_FULL, FULL, DIFF, INCR), 1700009999.5)
    assert values == {
        "pgbackrest_info_success": [({}, 1.0)],
        "pgbackrest_info_timestamp_seconds": [({}, 1700009999.5)],
        "pgbackrest_stanza_status": [({}, 0.0)],
        "pgbackrest_backup_last_completion_timestamp_seconds": [
            ({"backup_type": "full"}, 1700000100.0),
            ({"backup_type": "diff"}, 1700003600.0),
            ({"backup_type": "incr"}, 1700007200.0),
        ],
    }
    only_full = backup_metrics.metric_values(info(FULL), 1.0)
    assert only_full["pgbackrest_backup_last_completion_timestamp_seconds"] == [
        ({"backup_type": kind}, 1700000100.0) for kind in ("full", "diff", "incr")
    ]


def test_no_backup_yet_and_info_failing():
    values = backup_metrics.metric_values(info(code=2), 5.0)
    assert values["pgbackrest_stanza_status"] == [({}, 2.0)]
    assert values["pgbackrest_backup_last_completion_timestamp_seconds"] == []
    assert backup_metrics.metric_values(None, 5.0) == {
        "pgbackrest_info_success": [({}, 0.0)],
        "pgbackrest_info_timestamp_seconds": [({}, 5.0)],
    }


def test_the_textfile_exact_0644_under_the_steps_umask_and_renamed_into_place(tmp_path):
    output = tmp_path / "pgbackrest.prom"
    output.write_text("old\n")
    previous = os.umask(0o077)
    try:
        values = backup_metrics.metric_values(info(FULL), 1700000200.0)
        backup_metrics.write_metrics(str(output), "mastodon", values)
    finally:
        os.umask(previous)
    assert [p.name for p in tmp_path.iterdir()] == ["pgbackrest.prom"]  # no temporary file left
    assert stat.S_IMODE(output.stat().st_mode) == 0o644
    samples = [line for line in output.read_text().splitlines() if not line.startswith("#")]
    assert samples == [
        'pgbackrest_info_success{stanza="mastodon"} 1.0',
        'pgbackrest_info_timestamp_seconds{stanza="mastodon"} 1.7000002e+09',
        'pgbackrest_stanza_status{stanza="mastodon"} 0.0',
        *(f'{COMPLETION}{{backup_type="{kind}",stanza="mastodon"}} 1.7000001e+09'
          for kind in ("full", "diff", "incr")),
    ]  # fmt: skip


def fake_pgbackrest(tmp_path, monkeypatch, exit_code: int, stdout: str):
    """pgbackrest replaced by a script that prints `stdout` and exits with `exit_code`; its
    arguments are recorded."""
    script = tmp_path / "pgbackrest"
    (tmp_path / "out.json").write_text(stdout)
    script.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat {tmp_path}/out.json\n'
        f"echo 'ERROR: [039]: HTTP request failed' >&2\nexit {exit_code}\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(backup_metrics, "PGBACKREST", str(script))
    monkeypatch.setattr(backup_metrics, "AS_POSTGRES", [])


def test_read_info_picks_the_stanza_and_returns_none_on_failure(tmp_path, monkeypatch, capsys):
    other = {**info(FULL), "name": "other"}
    fake_pgbackrest(tmp_path, monkeypatch, 0, json.dumps([other, info(DIFF)]))
    assert backup_metrics.read_info("mastodon") == info(DIFF)
    assert (tmp_path / "argv").read_text() == "--stanza=mastodon info --output=json\n"
    fake_pgbackrest(tmp_path, monkeypatch, 0, json.dumps([other]))
    assert backup_metrics.read_info("mastodon") is None
    fake_pgbackrest(tmp_path, monkeypatch, 39, "")
    assert backup_metrics.read_info("mastodon") is None
    assert "pgbackrest info: exit 39: ERROR: [039]: HTTP request failed" in capsys.readouterr().err
