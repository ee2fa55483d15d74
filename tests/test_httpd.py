"""httpd.py and the health probes: /metrics in the text format, /health from real clamd PINGs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from govmilter import httpd
from govmilter.config import load_config
from govmilter.metrics import Metrics
from govmilter.runtime import Runtime
from stack import free_port
from support.lab_clamd import LabClamd

RULES = Path(__file__).resolve().parent.parent / "rules"


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


Serve = Callable[[Callable[[], dict[str, Any]], Metrics], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers = []

    def start(health: Callable[[], dict[str, Any]], metrics: Metrics) -> str:
        port = free_port()
        servers.append(httpd.start(f"127.0.0.1:{port}", metrics.registry, health))
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_metrics_endpoint_serves_the_text_format_and_refreshes_probes(serve: Serve) -> None:
    metrics = Metrics()
    probes: list[int] = []

    def health() -> dict[str, Any]:
        probes.append(1)
        metrics.clamd_up.labels(address="unix:/run/clamd.ctl").set(len(probes) % 2)
        return {"ok": True}

    base = serve(health, metrics)
    metrics.messages.labels(action="accept", check="none").inc(3)
    status, content_type, body = get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    accepted = [s for s in families["govmilter_messages"].samples if s.labels == {"action": "accept", "check": "none"}]
    assert accepted[0].value == 3
    assert [s.value for s in families["govmilter_clamd_up"].samples] == [1]  # set by the probe of this scrape
    assert get(f"{base}/metrics")[2].count('govmilter_clamd_up{address="unix:/run/clamd.ctl"} 0.0') == 1
    assert len(probes) == 2
    assert get(f"{base}/metrics?name[]=x")[0] == 200  # query strings are ignored


def test_metrics_endpoint_speaks_openmetrics_when_asked(serve: Serve) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

    metrics = Metrics()
    metrics.rule_reloads.labels(outcome="failed").inc()
    base = serve(lambda: {"ok": True}, metrics)
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        body = response.read().decode()
    assert body.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(body)}
    failed = [s for s in families["govmilter_rule_reloads"].samples if s.name == "govmilter_rule_reloads_total"]
    assert {s.labels["outcome"]: s.value for s in failed} == {"reloaded": 0, "failed": 1}


def test_health_is_200_when_ok_503_when_not_or_when_a_probe_raises(serve: Serve) -> None:
    state: dict[str, Any] = {"ok": True, "antivirus": {"ok": True}}

    def health() -> dict[str, Any]:
        if state.get("raise"):
            raise RuntimeError("probe bug")
        return dict(state)

    base = serve(health, Metrics())
    status, content_type, body = get(f"{base}/health")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"ok": True, "antivirus": {"ok": True}}
    state["ok"] = False
    assert get(f"{base}/health")[0] == 503
    state["raise"] = True
    status, _, body = get(f"{base}/health")
    assert status == 503 and json.loads(body) == {"ok": False, "error": "health probe raised RuntimeError"}
    assert get(f"{base}/metrics")[0] == 200  # a broken probe never breaks the scrape
    assert get(f"{base}/other")[0] == 404


def runtime_with_clamd(tmp_path: Path, addresses: list[str]) -> Runtime:
    config = load_config(
        None,
        [
            f'rules.dir="{RULES}"',
            'rules.last_good_dir=""',  # no copy kept, never in the host's /var/lib/govmilter
            "dnsbl.enabled=false",
            f"antivirus.clamd={json.dumps(addresses)}",
            "antivirus.connect_timeout=1.0",
        ],
    )
    return Runtime(config)


def test_health_reports_clamd_and_the_rule_set(clamd: LabClamd, tmp_path: Path, serve: Serve) -> None:
    dead = f"unix:{tmp_path / 'no-clamd.sock'}"
    live = f"unix:{clamd.socket_path}"
    runtime = runtime_with_clamd(tmp_path, [live, dead])
    base = serve(runtime.health, runtime.metrics)

    status, _, body = get(f"{base}/health")
    report = json.loads(body)
    assert status == 200, report
    assert report["ok"] is True
    assert report["antivirus"]["ok"] is True
    assert report["antivirus"]["clamd"] == {live: "up", dead: "down"}
    assert report["ruleset"] == runtime.rules.current().version
    assert report["last_reload"] == "initial"

    text = get(f"{base}/metrics")[2]
    assert f'govmilter_clamd_up{{address="{live}"}} 1.0' in text
    assert f'govmilter_clamd_up{{address="{dead}"}} 0.0' in text
    assert f'govmilter_ruleset_info{{version="{report["ruleset"]}"}} 1.0' in text


def test_health_is_503_when_no_clamd_answers(clamd_factory: Callable[..., LabClamd], tmp_path: Path) -> None:
    server = clamd_factory()
    address = f"unix:{server.socket_path}"
    runtime = runtime_with_clamd(tmp_path, [address])
    assert runtime.health()["ok"] is True
    server.stop()
    report = runtime.health()
    assert report["ok"] is False
    assert report["antivirus"] == {"ok": False, "clamd": {address: "down"}}
    assert runtime.metrics.registry.get_sample_value("govmilter_clamd_up", {"address": address}) == 0
    server.start()  # clamd came back: the next probe sees it, no message needed
    assert runtime.health()["ok"] is True
    assert runtime.metrics.registry.get_sample_value("govmilter_clamd_up", {"address": address}) == 1


def test_a_taken_port_is_named_with_its_key_and_the_daemon_exits_non_zero(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError) as failed:
            httpd.start(listen, Metrics().registry, lambda: {"ok": True})
        assert str(failed.value) == f"[metrics] listen {listen} is already in use (another govmilter or exporter?)"

        # the daemon says so on one line and stops before it opens the milter socket
        milter_port = free_port()
        result = subprocess.run(
            [sys.executable, "-m", "govmilter", "run", "--skip", "antivirus", "--skip", "dnsbl",
             "--set", f'rules.dir="{RULES}"', "--set", f'rules.last_good_dir="{tmp_path / "lg"}"',
             "--set", f'history.path="{tmp_path / "history.sqlite"}"',
             "--set", f'milter.socket="inet:{milter_port}@127.0.0.1"', "--set", f'metrics.listen="{listen}"'],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"error: [metrics] listen {listen} is already in use" in result.stderr
    assert "Errno" not in result.stderr


def test_a_taken_milter_port_is_named_with_its_key(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "govmilter", "run", "--skip", "antivirus", "--skip", "dnsbl",
             "--set", f'rules.dir="{RULES}"', "--set", f'rules.last_good_dir="{tmp_path / "lg"}"',
             "--set", f'history.path="{tmp_path / "history.sqlite"}"',
             "--set", f'milter.socket="inet:{port}@127.0.0.1"', "--set", 'metrics.listen=""'],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"error: [milter] socket inet:{port}@127.0.0.1: 127.0.0.1:{port} is already in use" in result.stderr
