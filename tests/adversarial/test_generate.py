"""The adversarial corpus generator itself: deterministic, complete, and well-formed envelopes."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from adversarial.generate import INTERNET_CLIENT, PROFILES, TRUSTED_RELAY, build_cases, generate

CLASSES = {"flood", "text", "cap", "marking", "virus", "bomb", "forwarding", "malformed", "log", "pass"}


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.eml"))}


def test_the_small_cases_are_the_same_bytes_on_every_run(tmp_path: Path) -> None:
    small = [case for case in build_cases() if not case.big and not case.id.startswith("bomb-")]
    generate(tmp_path / "a", small)
    generate(tmp_path / "b", small)
    first, second = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert first == second and len(first) == len(small)


def test_every_class_has_many_variants_and_sane_envelopes() -> None:
    cases = build_cases()
    counts = Counter(case.cls for case in cases)
    assert set(counts) == CLASSES
    assert all(counts[cls] >= 7 for cls in CLASSES - {"log", "bomb", "malformed"}), counts
    assert counts["pass"] >= 40  # the must-pass side is as large as the attacks it guards
    for case in cases:
        assert case.expect in ("refused", "delivered"), case.id
        assert case.profile in PROFILES, case.id
        assert case.client_ip in (TRUSTED_RELAY, INTERNET_CLIENT), case.id
        assert case.expect == "refused" or not case.enhanced, case.id
        if case.cls == "marking":  # markings are judged on the way out
            assert case.client_ip == TRUSTED_RELAY and case.mail_from.endswith("@bacninh.gov.vn"), case.id
