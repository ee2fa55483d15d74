"""`govmilter trace` on a SQLite store: the contract's options, JSON lines, readable output, time ranges."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from govmilter.__main__ import main
from govmilter.history.query import parse_between, parse_since
from govmilter.history.record import DecisionRecord, Hit
from govmilter.history.store import SqliteStore

HOSTILE_SUBJECT = "Bao cao \x1b[2J\x1b]0;owned\x07 \u202eexe.pdf"
NOW = time.time()


def make(queue_id: str, age: float, **values: object) -> DecisionRecord:
    base: dict[str, object] = dict(
        time=NOW - age, node="gw1", queue_id=queue_id, message_id=f"<{queue_id}@x.vn>", subject="Bao cao",
        mail_from="officer@bacninh.gov.vn", rcpts=["partner@example.com"], from_header="", client_ip="10.0.0.5",
        client_name="", direction="outbound", direction_why="trusted relay", authenticated=False, size=100,
        action="accept", check="", rule="", reply="", ruleset="v1",
    )  # fmt: skip
    base.update(values)
    return DecisionRecord(**base)  # type: ignore[arg-type]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite"
    store = SqliteStore(str(path))
    store.write([
        make("A1", 60),
        make("A2", 7200, action="reject", check="forwarding", rule="outbound-srs", reply="550 5.7.520 cam",
             hits=[Hit("antivirus", "", "enforce", "continue", 0, "clean"),
                   Hit("forwarding", "outbound-srs", "enforce", "reject", 0, "SRS", "550 5.7.520 cam")]),
        make("A3", 86400 * 3, subject=HOSTILE_SUBJECT,
             hits=[Hit("impersonation", "lookalike", "monitor", "reject", 0, "look-alike", "550 5.7.1 no")],
             would="reject"),
    ])  # fmt: skip
    store.close()
    return path


def run(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["trace", "--set", f'history.path="{path}"', *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lines_carry_the_contract_keys(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, store_path, "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["queue_id"] for r in lines] == ["A1", "A2", "A3"]  # newest first
    for record in lines:
        assert {"queue_id", "subject", "mail_from", "rcpts", "action", "hits"} <= set(record)
        assert all({"check", "rule"} <= set(hit) for hit in record["hits"])
    assert lines[2]["subject"] == HOSTILE_SUBJECT  # the record as sent; JSON escapes it
    assert out.isascii()


def test_each_option_of_the_contract(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def ids(*args: str) -> list[str]:
        code, out, err = run(capsys, store_path, "--json", *args)
        assert code == 0, err
        return [json.loads(line)["queue_id"] for line in out.splitlines()]

    assert ids("--rule", "outbound-srs", "--since", "1d") == ["A2"]
    assert ids("--from", "OFFICER@bacninh.gov.vn", "--to", "partner@example.com", "--since", "7d") == ["A1", "A2", "A3"]
    assert ids("--action", "reject") == ["A2"]
    assert ids("--since", "1h") == ["A1"]
    assert ids("--queue-id", "A3") == ["A3"] and ids("--message-id", "A3@x.vn") == ["A3"]
    assert ids("--subject", "owned") == ["A3"]
    day = dt.date.fromtimestamp(NOW - 86400 * 3).isoformat()
    assert ids("--between", f"{day}..{day}") == ["A3"]


def test_readable_output_never_hands_a_control_character_to_the_terminal(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, store_path, "--queue-id", "A3")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "Bao cao \\x1b[2J\\x1b]0;owned\\x07 \\u202eexe.pdf" in out
    assert "hit       impersonation/lookalike monitor reject: look-alike" in out
    assert "would reply: 550 5.7.1 no" in out and "would have been refused: reject" in out
    code, out, _ = run(capsys, store_path, "--queue-id", "A2")
    assert "REJECT by forwarding/outbound-srs" in out and "reply     550 5.7.520 cam" in out
    # what a check saw of a message it let pass reads as such, not as a hit of a rule without a name
    assert "  checked   antivirus: clean\n" in out and "antivirus/" not in out
    code, out, _ = run(capsys, store_path, "--queue-id", "none")
    assert code == 0 and out.strip() == "no message found"


def test_per_rule_summary(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, store_path, "--rules", "--since", "7d", "--json")
    assert code == 0
    rows = {r["rule"]: r for r in map(json.loads, out.splitlines())}
    assert rows["outbound-srs"] == {"check": "forwarding", "rule": "outbound-srs", "hits": 1, "refusals": 1,
                                    "would_refusals": 0, "monitor_hits": 0}  # fmt: skip
    assert rows["lookalike"]["would_refusals"] == 1 and rows["lookalike"]["refusals"] == 0
    code, out, _ = run(capsys, store_path, "--rules", "--since", "1h")
    assert out.strip() == "no rule hits in this period"
    code, out, _ = run(capsys, store_path, "--rules")
    assert out.splitlines()[0].split() == ["check", "rule", "hits", "refused", "would", "refuse", "(monitor)",
                                           "monitor", "hits"]  # fmt: skip


def test_errors_are_plain_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, tmp_path / "none.sqlite", "--since", "1h")
    assert code == 1 and "cannot be read" in err and "none.sqlite" in err
    code, _, err = run(capsys, tmp_path / "none.sqlite", "--since", "1h", "--between", "2026-01-01..2026-01-02")
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, tmp_path / "none.sqlite", "--since", "last tuesday")
    assert code == 2 and "write 1h, 7d" in err


def test_time_ranges() -> None:
    now = dt.datetime(2026, 12, 4, 10, 30).timestamp()
    assert parse_since("1h", now) == (now - 3600, None)
    assert parse_since("7d", now) == (now - 7 * 86400, None)
    start, end = parse_since("yesterday", now)
    assert (dt.datetime.fromtimestamp(start), dt.datetime.fromtimestamp(end or 0)) == (
        dt.datetime(2026, 12, 3), dt.datetime(2026, 12, 4))  # fmt: skip
    assert parse_since("today", now) == (dt.datetime(2026, 12, 4).timestamp(), None)
    assert parse_between("2026-12-01..2026-12-03") == (dt.datetime(2026, 12, 1).timestamp(),
                                                        dt.datetime(2026, 12, 4).timestamp())  # fmt: skip
    assert parse_between("2026-12-01 08:00..2026-12-01 09:30")[1] == dt.datetime(2026, 12, 1, 9, 30).timestamp()
