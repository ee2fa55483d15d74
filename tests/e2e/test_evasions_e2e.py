"""Issue 14's adversarial corpus through real Postfix, govmilter, clamd and the sink.

tests/adversarial/generate.py builds every case (header floods, text past the old budget,
attachments that were not called attachments, spelled-out markings, viruses and GTUBE in
every encoding and structure, compression bombs, list mail and the multipart/report label,
duplicate fields, a forged log line, and the legitimate mail that must still pass) into a
temporary directory once per module; each case is sent from its own client address with its
own envelope and must get its verdict: refused with a 5xx (and the enhanced code named, when
one is) at the end of DATA or earlier, or delivered to the sink.

Cases of the "cap1m" profile run with the attachment cap lowered to 1 MiB, so that "just past
the bound" stays small (a few cases use the real 20 MiB cap); the "lenient" profiles set the
malformed and parse-error policies to accept, so that a header flood or a duplicated field
must still be refused for what it hides. The milter is restarted once per profile (the cases
are grouped by profile) and restored afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from adversarial.generate import PROFILES, Case, build_cases, generate
from stack import Reply, Stack, wait_until

# the default profile first, then the lowered cap (one restart), then back
CASES = sorted(build_cases(), key=lambda case: list(PROFILES).index(case.profile))
LOGFMT_PAIR = re.compile(r'(?:^|\s)([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("adversarial"), CASES)


class Profiles:
    """Restarts the session's milter with a case profile's settings when the profile changes."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.saved = dict(stack.govmilter.settings)
        self.current = "default"

    def use(self, profile: str) -> None:
        if profile == self.current:
            return
        self.stack.govmilter.settings = dict(self.saved)
        self.stack.restart_milter(**PROFILES[profile])
        self.current = profile

    def restore(self) -> None:
        self.use("default")


@pytest.fixture(scope="module")
def profiles(stack: Stack) -> Iterator[Profiles]:
    switcher = Profiles(stack)
    try:
        yield switcher
    finally:
        switcher.restore()


def describe(case: Case, reply: Reply) -> str:
    text = " ".join(reply.text.split())
    want = f"{case.expect} {case.enhanced} {case.reason}".rstrip()
    return f"{case.id} ({case.note}): expected {want}, got {reply.stage} {reply.code} {text}"


def enhanced_code(reply: Reply) -> str:
    words = reply.text.split()
    return words[0] if words else ""


def assert_decision_fields_are_ours(stack: Stack, case: Case, log_from: int) -> None:
    """The decision line of the forged-address case parses, as logfmt, to one queue_id and one client."""
    log = stack.govmilter.log_path

    def line() -> str:
        text = log.read_bytes()[log_from:].decode("utf-8", "replace")
        found = [item for item in text.splitlines() if "govmilter.decision: " in item and "FORGED" in item]
        return found[-1] if found else ""

    wait_until(lambda: bool(line()), 30, "the decision line")
    fields = LOGFMT_PAIR.findall(line().split("govmilter.decision: ", 1)[1])
    keys = [key for key, _ in fields]
    values = dict(fields)
    assert keys.count("queue_id") == 1 and values["queue_id"] != "FORGED", line()
    assert keys.count("client") == 1 and values["client"] != "10.0.0.1", line()
    assert keys.count("action") == 1, line()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case_gets_its_verdict(stack: Stack, profiles: Profiles, corpus: dict[str, Path], case: Case) -> None:
    profiles.use(case.profile)
    log_from = stack.govmilter.log_path.stat().st_size
    reply = stack.send(case.mail_from, list(case.rcpts), corpus[case.id].read_bytes(), source_ip=case.client_ip)
    if case.expect == "refused":
        assert 500 <= reply.code < 600, describe(case, reply)
        if case.enhanced:
            codes = case.enhanced.split("|")
            assert enhanced_code(reply) in codes, describe(case, reply)
            if case.reason and enhanced_code(reply) == codes[0]:  # refused for this case's own reason
                assert re.search(case.reason, " ".join(reply.text.split()), re.I), describe(case, reply)
        return
    assert reply.accepted, describe(case, reply)
    delivered = stack.sink.find_id(case.message_id, timeout=60)
    assert delivered.message["X-Govmilter"], case.id
    if case.cls == "log":
        assert_decision_fields_are_ours(stack, case, log_from)
