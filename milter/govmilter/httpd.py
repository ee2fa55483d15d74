"""The HTTP endpoint Prometheus scrapes: /metrics, and /health for load balancers and people.

Each request to either runs the checks' health probes first (a clamd PING per address), so
govmilter_clamd_up is current at every scrape even when no mail flows, and an alert on it
fires at night as well as under traffic.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("govmilter.httpd")

Health = Callable[[], dict[str, Any]]


def probe(health: Health) -> dict[str, Any]:
    """The health report; a probe that raises makes the report unhealthy, never the request fail."""
    try:
        return health()
    except Exception as exc:
        log.exception("health probe raised")
        return {"ok": False, "error": f"health probe raised {type(exc).__name__}"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


def start(listen: str, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                probe(health)  # refreshes the up/down gauges before they are read
                # text format 0.0.4 unless the scraper asks for OpenMetrics or text 1.0.0
                encode, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encode(registry))
            elif path == "/health":
                report = probe(health)
                body = json.dumps(report, sort_keys=True).encode() + b"\n"
                self._send(200 if report.get("ok") else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found: try /metrics or /health\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    server_class = _V6Server if ":" in host else _Server
    try:
        server = server_class((host, int(port)), Handler)
    except OSError as exc:  # said with the address and the key that names it, not "[Errno 98]"
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"[metrics] listen {listen} is already in use (another govmilter or exporter?)") from exc
        raise OSError(f"[metrics] listen {listen}: cannot listen: {exc.strerror or exc}") from exc
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s/metrics", listen)
    return server
