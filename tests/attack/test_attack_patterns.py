"""Attacks on rule patterns translated to RE2: a translation that matches less than Python's re did is a
bypass of an officer's rule. Each test states the hostile text; Python's `re` is the reference."""

from __future__ import annotations

import re
import tomllib
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govmilter.pipeline import CHECK_NAMES
from govmilter.ruleset.patterns import LINEAR, compile_pattern
from govmilter.text.normalize import normalize, normalize_pattern, strip_diacritics
from support.harness import RULES, Harness

INBOUND: dict[str, Any] = {"client_ip": "127.0.0.3", "mail_from": "a@example.com", "rcpts": ["user@bacninh.gov.vn"]}
EVERY = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
# what the class tests read: every character the running Python knows, and the whole BMP and plane 1
# (where Unicode versions newer than Python's add letters): RE2 would need seconds for all 1.1 M
UNIVERSE = "".join(c for c in EVERY if ord(c) < 0x20000 or unicodedata.category(c) != "Cn")
FOLD_SPECIALS = "iIıİsSſkK\u212aßẞµμ\u0345ιΙ"
# a letter of a script newer than some Pythons' Unicode tables (Kawi, Unicode 15): \W to Python 3.11's re
NEWER_LETTER = "\U00011f04"


def agree(source: str, text: str, ignore_case: bool) -> None:
    pattern = compile_pattern(source, ignore_case=ignore_case)
    expected = re.compile(source, re.IGNORECASE if ignore_case else 0).search(text) is not None
    assert (pattern.search(text) is not None) == expected, (source, pattern.engine, text)


# ---- letter case: re.IGNORECASE equates i, I, ı (dotless) and İ (dotted); RE2 does not ---------------


@pytest.mark.parametrize("text", ["buy vıagra now", "BUY VİAGRA NOW", "cıalis", "x2 your bıtcoin"])
def test_dotless_and_dotted_i_do_not_slip_past_a_case_insensitive_rule(text: str) -> None:
    for source in (r"\b(?:viagra|cialis)\b", "bitcoin", "v[i]agra", "v[h-j]agra", "V[^x]AGRA", "c[^İ]alis"):
        agree(source, text, ignore_case=True)
    assert compile_pattern("viagra", ignore_case=True).search("vıagra") == "vıagra"
    # case-sensitive rules keep their meaning: a dotless ı is not an i there
    assert compile_pattern("viagra", ignore_case=False).search("vıagra") is None


def test_the_shipped_pharma_rule_sees_a_dotless_i() -> None:
    skip = [name for name in CHECK_NAMES if name != "content"]
    harness = Harness(overrides=[], skip=skip)
    body = "Buy vıagra, cıalis and levıtra today, best price"
    raw = (
        "From: <s@example.com>\r\nTo: <user@bacninh.gov.vn>\r\nSubject: offer\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    ).encode()
    result = harness.scan(raw, **INBOUND)
    hits = [h.rule for h in result.tx.hits if h.check == "content"]
    result.close()
    assert "pharma" in hits, hits


def test_every_case_insensitive_letter_means_what_python_means() -> None:
    cased = "".join(c for c in EVERY if c.lower() != c or c.upper() != c or c.casefold() != c)
    data = cased.encode()
    for char in cased:
        for form in ("{c}", "[{c}]", "[^{c}]") if char in FOLD_SPECIALS else ("{c}", "[{c}]"):
            source = form.format(c=re.escape(char))
            pattern = compile_pattern(source, ignore_case=True)
            assert pattern.linear
            ours = {bytes(m).decode() for m in pattern._re2.findall(data)}
            assert ours == set(re.findall(source, cased, re.IGNORECASE)), (source, hex(ord(char)))


# ---- \w \W \d \D \s \b: Python's tables, not RE2's newer ones -------------------------------------------


@pytest.mark.parametrize("source", [r"\W", r"\D", r"[^\w]", r"[^\w\n]", r"[\W_]", r"\S", r"[^\d]", r"\s"])
@pytest.mark.parametrize("ignore_case", [False, True])
def test_not_a_letter_is_what_python_calls_not_a_letter(source: str, ignore_case: bool) -> None:
    pattern = compile_pattern(source, ignore_case=ignore_case)
    assert pattern.linear, pattern.why
    ours = b"".join(pattern._re2.findall(UNIVERSE.encode())).decode()
    python = "".join(re.findall(source, UNIVERSE, re.IGNORECASE if ignore_case else 0))
    if ours != python:
        missing, extra = set(python) - set(ours), set(ours) - set(python)
        pytest.fail(f"RE2 misses {sorted(hex(ord(c)) for c in missing)[:10]} (a bypass), "
                    f"adds {sorted(hex(ord(c)) for c in extra)[:10]}")  # fmt: skip


@pytest.mark.parametrize("ignore_case", [False, True])
def test_a_separator_python_calls_not_a_letter_keeps_a_word_boundary(ignore_case: bool) -> None:
    for text in (f"{NEWER_LETTER}viagra{NEWER_LETTER}", "x\u0345viagra\u0345", f"TỐI{NEWER_LETTER}MẬT"):
        for source in (r"\bviagra\b", r"(?:^|[\W_])viagra(?:[\W_]|$)", r"TỐI\W+MẬT", r"\bMẬT\b"):
            agree(source, text, ignore_case)


def test_arabic_indic_digits_and_odd_spaces_are_pythons() -> None:
    for text in ("x2 ١٢٣ btc", "khẩn\u00a0mật", "khẩn\u3000mật", "khẩn\u2028mật", "a\u0085b"):
        for source in (r"\d{3}", r"\D\d", r"khẩn\smật", r"khẩn\Smật", r"a\sb", r"(?m)^b"):
            agree(source, text, ignore_case=True)


# ---- the shipped patterns against texts built from their own pieces and the odd characters above -----

ODD = ["ı", "İ", "ſ", "\u212a", "ẞ", "ß", "\u0345", NEWER_LETTER, "\u00a0", "\u2028", "\r\n", "\n", "١", "_", "."]


def shipped() -> list[tuple[str, str, bool]]:
    found = []
    for path in sorted(RULES.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        if data.get("kind") != "content":
            continue
        for rule in data.get("rule", []):
            if not isinstance(rule.get("pattern"), str):
                continue
            source = normalize_pattern(rule["pattern"])
            if rule.get("ignore_diacritics"):
                source = strip_diacritics(source)
            found.append((rule["id"], source, not rule.get("case_sensitive", False)))
    return found


SHIPPED = shipped()
PIECES = sorted({w for _, s, _ in SHIPPED for w in re.findall(r"[^\W\d_]{3,}", s)})


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(ODD), st.sampled_from(PIECES), st.sampled_from([" ", "[", "@", "x"])),
                max_size=10))  # fmt: skip
def test_shipped_patterns_find_what_python_finds_in_hostile_text(pieces: list[str]) -> None:
    text = normalize("".join(pieces))
    for rule_id, source, ignore_case in SHIPPED:
        pattern = compile_pattern(source, ignore_case=ignore_case)
        expected = re.compile(source, re.IGNORECASE if ignore_case else 0).search(text) is not None
        if not pattern.linear:
            continue  # the fallback engine is `regex`, not a translation
        assert (pattern.search(text) is not None) == expected, (rule_id, text)


def test_counted_repetition_past_re2s_cap_still_matches() -> None:
    pattern = compile_pattern("xa{0,5000}y", ignore_case=False)
    assert pattern.search("x" + "a" * 4000 + "y") is not None
    assert compile_pattern("x(?:ab){1001}y", ignore_case=False).search("x" + "ab" * 1001 + "y")


def test_a_huge_alternation_is_decided_at_load_not_at_match_time() -> None:
    words = [f"tu{i:05d}khoa" for i in range(20000)]
    pattern = compile_pattern("|".join(words), ignore_case=True)
    # compiled (on RE2, or on the fallback with its reason) when the rules load; every word still matches
    for word in (words[0], words[9999], words[-1]):
        assert pattern.search(f"noi dung {word.upper()} het", timeout=5.0) is not None, pattern.engine
    assert pattern.engine == LINEAR or pattern.why
