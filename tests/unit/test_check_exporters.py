"""check-replication --exporters: one line per server of prometheus_targets, from what each
exporter answers (a real HTTP server on loopback; a closed port for one that is down)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mastodon_data.cli.check_replication import exporter_lines


class Metrics(BaseHTTPRequestHandler):
    asked: list[str] = []

    def do_GET(self):
        Metrics.asked.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"up 1\n")

    def log_message(self, *args):
        pass


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_each_server_says_which_exporters_answer():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    up, down = f"127.0.0.1:{server.server_address[1]}", f"127.0.0.1:{closed_port()}"
    probe = {"__metrics_path__": "/probe", "__param_target": "10.0.0.2:5432",
             "__param_module": "postgres"}  # fmt: skip
    groups = [
        {"targets": [up], "labels": {"job": "postgres", "server": "h1"}},
        {"targets": [up], "labels": {"job": "ssl", "server": "h1", **probe}},
        {"targets": [up], "labels": {"job": "postgres", "server": "h2"}},
        {"targets": [down], "labels": {"job": "node", "server": "h2"}},
    ]
    try:
        lines, healthy = exporter_lines(groups)
    finally:
        server.shutdown()
    assert lines == [
        "h1: exporters postgres, ssl answering",
        "h2: exporters postgres, node  <- node not answering",
    ]
    assert not healthy
    assert "/probe?target=10.0.0.2%3A5432&module=postgres" in Metrics.asked


def test_no_groups_no_lines_and_healthy():
    assert exporter_lines([]) == ([], True)
