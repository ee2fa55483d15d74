"""The scan cache's key and its rules for reusing an answer (pure logic; clamd in tests/checks/test_antivirus.py)."""

from __future__ import annotations

from govmilter.checks.antivirus.scancache import MAX_SKIPPED_VALUE, CachedScan, ScanCache, scan_key

HEADERS = [
    ("Received", "from a.example (a [192.0.2.1]) by mx.bacninh.gov.vn"),
    ("From", "vanthu@bacninh.gov.vn"),
    ("To", "user1@bacninh.gov.vn"),
    ("Subject", "Cong van 12/UBND"),
    ("Date", "Mon, 23 Nov 2026 09:00:00 +0700"),
    ("Message-ID", "<1@bacninh.gov.vn>"),
    ("Content-Type", "text/plain; charset=utf-8"),
]
BODY = [b"Kinh gui cac don vi,\r\n", b"Noi dung cong van.\r\n"]


def key(headers: list[tuple[str, str]] = HEADERS, body: list[bytes] = BODY) -> str:
    return scan_key(headers, iter(body))


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in HEADERS]


def test_per_copy_fields_are_left_out_whatever_their_case_or_number() -> None:
    copy = [
        ("RECEIVED", "from b.example by relay"),
        ("received", "from relay by mx"),
        *[(n, v) for n, v in replaced("To", "user2@bacninh.gov.vn") if n not in ("Date", "Message-ID", "Received")],
        ("date", "Tue, 24 Nov 2026 09:00:00 +0700"),
        ("Message-Id", "<2@bacninh.gov.vn>"),
        ("Cc", "user3@bacninh.gov.vn"),
        ("DKIM-Signature", "v=1; a=rsa-sha256; d=bacninh.gov.vn; b=abc"),
    ]
    assert key(copy) == key()


def test_every_other_field_and_the_body_are_in_the_key() -> None:
    assert key(replaced("Subject", "Cong van 13/UBND")) != key()
    assert key(replaced("From", "khac@bacninh.gov.vn")) != key()
    assert key(replaced("Content-Type", "text/html")) != key()
    assert key([*HEADERS, ("X-Mailer", "a")]) != key()
    assert key(body=[*BODY, b"them\r\n"]) != key()
    # field boundaries count: a value cannot pose as the next field
    assert scan_key([("Subject", "a"), ("X-A", "b")], iter(())) != scan_key([("Subject", "a\0x-a\0b")], iter(()))


def test_the_body_key_does_not_depend_on_chunking() -> None:
    whole = b"".join(BODY)
    assert key(body=[whole]) == key() == key(body=[whole[i : i + 3] for i in range(0, len(whole), 3)])


def test_a_per_copy_field_longer_than_a_header_line_stays_in_the_key() -> None:
    at_limit = key(replaced("Received", "x" * MAX_SKIPPED_VALUE))
    assert at_limit == key()
    assert key(replaced("Received", "x" * (MAX_SKIPPED_VALUE + 1))) != key()


def test_an_answer_is_reused_only_from_the_same_clamd_version() -> None:
    cache = ScanCache(max_entries=10, ttl=60)
    answer = CachedScan("", "unix:/run/clamd.ctl", "ClamAV 1.0.9/27000")
    cache.put("k", answer)
    assert cache.get("k", lambda address: "ClamAV 1.0.9/27000") == answer
    assert cache.get("k", lambda address: "ClamAV 1.0.9/27001") is None
    assert cache.get("other", lambda address: "ClamAV 1.0.9/27000") is None


def test_an_answer_without_a_version_or_with_ttl_zero_is_not_kept() -> None:
    cache = ScanCache(max_entries=10, ttl=60)
    cache.put("k", CachedScan("", "unix:/run/clamd.ctl", ""))
    assert cache.get("k", lambda address: "") is None
    off = ScanCache(max_entries=10, ttl=0)
    assert not off.enabled
    off.put("k", CachedScan("Eicar", "unix:/run/clamd.ctl", "ClamAV 1.0.9/27000"))
    assert off.get("k", lambda address: "ClamAV 1.0.9/27000") is None
