"""The one line `mastodon-data backups` prints to stderr, for each of its actions."""

from mastodon_data.cli.backups import summary_line


def test_a_check_line_names_the_last_backup_and_the_archive():
    report = {
        "check": "ok",
        "last_backup": {"label": "20261124-001523F", "type": "full"},
        "archive": {"lag_bytes": 40960, "lag_seconds": 3, "failed_count": 0},
    }
    assert summary_line(report) == (
        "check ok; last backup 20261124-001523F (full); archive lag 40960 B / 3 s; "
        "failed archives 0"
    )


def test_a_check_line_without_a_backup_says_none():
    assert summary_line({"check": "ok", "archive": {}}) == (
        "check ok; last backup none (-); archive lag - B / - s; failed archives -"
    )


def test_a_backup_line_names_the_backup_and_its_time():
    report = {
        "action": "backup",
        "type": "diff",
        "seconds": 4.21,
        "last_backup": {"label": "20261124-001523F_20261125-001502D", "type": "diff"},
    }
    assert summary_line(report) == (
        "backup 20261124-001523F_20261125-001502D (diff) taken in 4.21 s"
    )
