"""Literal prefilters: whenever a pattern matches, its prefilter must let the text through."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from govmilter.text.prefilter import Prefilter, build, fold, rarest_two
from support.harness import Harness


def test_literals_of_a_plain_alternation() -> None:
    prefilter = build(re.compile(r"\b(?:viagra|cialis)\b", re.I))
    assert prefilter is not None
    assert set(prefilter.literals) == {"viagra", "cialis"} and prefilter.folded
    assert prefilter.may_match("Buy VIAGRA now", fold("buy viagra now"))
    assert not prefilter.may_match("nothing here", "nothing here")


def test_the_strongest_required_piece_is_kept() -> None:
    prefilter = build(re.compile(r"(?:double|x2).{0,40}(?:bitcoin|ethereum)"))
    assert prefilter is not None and set(prefilter.literals) == {"bitcoin", "ethereum"}


def test_no_prefilter_when_nothing_is_required() -> None:
    assert build(re.compile(r"\w+@\w+")) is None
    assert build(re.compile(r"(?:abc)?def|x")) is None  # one branch requires only "x"
    assert build(re.compile(r"(?:foo)*bar")) is not None  # "bar" is still required


def test_folding_covers_what_ignorecase_equates() -> None:
    for pattern, text in (("s", "ſ"), ("k", "\u212a"), ("i", "ı"), ("İ", "i"), ("µ", "Μ")):
        prefilter = build(re.compile(re.escape(pattern) + "xyz", re.I))
        assert re.search(re.escape(pattern) + "xyz", text + "xyz", re.I)
        assert prefilter is not None and prefilter.may_match(text + "xyz", fold(text + "xyz")), (pattern, text)


def test_local_ignorecase_lowercases_the_comparison() -> None:
    prefilter = build(re.compile(r"(?i:MẬT)\s+KHẨN"))
    assert prefilter is not None and prefilter.folded
    text = "tài liệu mật khẩn"
    assert prefilter.may_match(text, fold(text))


def test_every_shipped_content_rule_is_sound_on_its_own_examples() -> None:
    rules = Harness(skip=["antivirus", "dnsbl"]).ruleset.get("content").rules
    samples = [
        "TỐI MẬT", "Tài liệu TUYỆT MẬT số 5", "MẬT", "[MẬT]", "xac nhan tai khoan email", "dang ky tai khoan",
        "Chuc mung ban da trung thuong", "vay tien nhanh", "ca do bong da", "VIAGRA", "double your bitcoin",
        "cap nhat mat khau tai khoan thu cong vu", "report.pdf.exe", "toi_mat.docx",
    ]
    for rule in rules:
        prefilter = getattr(rule, "prefilter", None) or build(rule.regex)
        if prefilter is None:
            continue
        for text in samples:
            if rule.regex.search(text):
                assert prefilter.may_match(text, fold(text)), (rule.id, text)


pieces = st.sampled_from(["ab", "bc", "ca", "abc", "x", "Mật", "TỐI", "đ", "a.b", "q"])
atoms = st.one_of(
    pieces.map(re.escape),
    st.sampled_from([r"\w", r"\s", ".", "[a-c]", r"\d"]),
)


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 4 if depth < 2 else 1))
        if kind <= 1:
            parts.append(draw(atoms))
        elif kind == 2:
            parts.append("(?:" + "|".join(draw(st.lists(patterns(depth + 1), min_size=1, max_size=3))) + ")")
        elif kind == 3:
            repeat = draw(st.sampled_from(["*", "+", "?", "{1,3}", "{0,2}"]))
            parts.append("(?:" + draw(patterns(depth + 1)) + ")" + repeat)
        else:
            parts.append("(?i:" + draw(patterns(depth + 1)) + ")")
    return "".join(parts)


# texts made of the same pieces (in both cases) so that many of them match
texts = st.lists(
    st.sampled_from(["ab", "bc", "ca", "abc", "x", "Mật", "MẬT", "TỐI", "tối", "đ", "Đ", "a.b", "Q", " ", "1", "AB"]),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(patterns(), st.booleans(), texts, texts, st.data())
def test_a_match_always_passes_the_prefilter(
    pattern: str, ignorecase: bool, before: str, after: str, data: st.DataObject
) -> None:
    # the text is built from the pattern, so that it matches: every example reaches the asserts
    # (about 6 in 10 generated patterns have a prefilter; random texts matched in 1-6 of 400)
    regex = re.compile(pattern, re.I if ignorecase else 0)
    text = before + data.draw(st.from_regex(regex, fullmatch=True)) + after
    assert regex.search(text), (pattern, text)
    prefilter = build(regex)
    if prefilter is not None:
        assert prefilter.may_match(text, fold(text)), (pattern, text, prefilter)


@settings(max_examples=200, deadline=None)
@given(patterns(), st.booleans(), texts)
def test_random_texts_through_the_prefilter(pattern: str, ignorecase: bool, text: str) -> None:
    # the other half: random texts (most do not match); a prefilter may let them through, never raise
    regex = re.compile(pattern, re.I if ignorecase else 0)
    prefilter = build(regex)
    if prefilter is not None:
        answer = prefilter.may_match(text, fold(text))
        assert answer or not regex.search(text), (pattern, text, prefilter)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="xac nhbq\u1ead", min_size=1, max_size=6), min_size=1, max_size=4),
    st.text(alphabet="xac nhbq\u1eadz", max_size=40),
)
def test_the_rare_character_probes_change_no_answer(literals: list[str], text: str) -> None:
    # the probes only skip literals the text cannot contain: the answer is the plain substring test
    prefilter = Prefilter(tuple(literals), folded=False)
    assert prefilter.may_match(text, text) == any(literal in text for literal in literals)


def test_the_rarest_characters_are_probed_first() -> None:
    assert rarest_two("xac nhan") == ("x", "c")
    assert rarest_two("m\u1eadt") == ("\u1ead", "m")  # characters outside the table count as rarest
    assert rarest_two("aaa") == ("a", "a")
