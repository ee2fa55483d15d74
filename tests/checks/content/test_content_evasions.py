"""State-secret markings written to slip past the rules, sentences that must still pass, and
the streaming read of all the text of a message in bounded memory."""

from __future__ import annotations

import base64
import re
import tempfile
import tracemalloc
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from govmilter.checks.content.check import GTUBE, OVERLAP, WINDOW, ContentCheck, ContentRule, ContentRules
from govmilter.checks.dnsbl import streamed_link_domains
from govmilter.config import load_config
from govmilter.metrics import Metrics
from govmilter.model import Action, Envelope, MessageFacts, Stage, TextPart, Transaction, Verdict
from govmilter.pipeline import CHECK_NAMES, rule_compilers
from govmilter.ruleset import load_ruleset
from govmilter.text import normalize as textnorm
from govmilter.text.normalize import HtmlText, decode_header_value, html_to_text, normalize, strip_diacritics
from support.harness import RULES, Harness

OTHERS = [name for name in CHECK_NAMES if name != "content"]
OUTBOUND: dict[str, Any] = {
    "client_ip": "127.0.0.1",
    "mail_from": "a.nguyen@bacninh.gov.vn",
    "rcpts": ["partner@example.com"],
}
INBOUND: dict[str, Any] = {"client_ip": "127.0.0.3", "mail_from": "a@example.com", "rcpts": ["user@bacninh.gov.vn"]}


def shipped() -> dict[str, ContentRule]:
    rules = load_ruleset(RULES, rule_compilers()).get("content")
    assert isinstance(rules, ContentRules)
    return {rule.id: rule for rule in rules.rules}


SUBJECT = shipped()["secret-marking-subject"].regex
BODY = shipped()["secret-marking-body"].regex


def marked(text: str) -> bool:
    """What the shipped body rule says of the text once normalised."""
    return bool(BODY.search(normalize(text)))


def harness(*overrides: str) -> Harness:
    return Harness(overrides=list(overrides), skip=OTHERS)


def message(subject: str, body: str, *, html: bool = False) -> bytes:
    kind = "html" if html else "plain"
    encoded = base64.encodebytes(body.encode()).decode()
    return (
        f"From: <a.nguyen@bacninh.gov.vn>\r\nTo: <partner@example.com>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
    ).encode()


def refused_by(raw: bytes, rule: str, **envelope: Any) -> bool:
    result = harness().scan(raw, **(envelope or OUTBOUND))
    return result.verdict.refuses and result.verdict.rule == rule


# ---- every evasion class, several variants each -------------------------------------------------

EVASIONS = {
    "no-break space": ["TỐI\u00a0MẬT", "TUYỆT\u00a0MẬT", "Số 12 - TỐI\u00a0MẬT - lưu hành nội bộ"],
    "narrow no-break and other spaces": ["TỐI\u202fMẬT", "TUYỆT\u2007MẬT", "TỐI\u3000MẬT", "TỐI\u1680MẬT"],
    "line and paragraph separators": ["TỐI\u2028MẬT", "TUYỆT\u2029MẬT", "kế hoạch\u2028MẬT\u2028số 5", "TỐI\x85MẬT"],
    # a right-to-left override shows its stretch reversed: the marking is what the reader sees
    "bidi controls": [
        "TỐI M\u202eẬ\u202cT",
        "TỐI \u202eTẬM\u202c",
        "\u202eTẬM IỐT\u202c",
        "T\u202dỐI MẬT",
        "TỐI \u2066MẬT\u2069",
        "TUYỆT\u200f MẬT",
    ],
    "combining grapheme joiner and other ignorables": [
        "TỐI M\u034fẬT",
        "TỐ\u034fI MẬT",
        "TỐI MẬ\ufe0fT",
        "TỐI M\u3164ẬT",
        "TỐI MẬ\U000e0041T",
        "TUY\u115fỆT MẬT",
    ],
    "Cyrillic and Greek look-alikes": [
        "ТỐІ МẬТ",  # Cyrillic Т, І, М
        "TỐЇ MẬT",  # Cyrillic Ї
        "ΤỐΙ ΜẬΤ",  # Greek Τ, Ι, Μ
        "TUYỆТ MẬT",
        "ТỐI МА\u0323\u0302T",  # Cyrillic А with combining dot below and circumflex
    ],
    "spaced letters": ["T Ố I  M Ậ T", "T.Ố.I M.Ậ.T", "M.Ậ.T", "T U Y Ệ T  M Ậ T", "M - Ậ - T", "T_Ố_I M_Ậ_T"],
    "closing punctuation": ["TỐI MẬT.", "Kế hoạch TUYỆT MẬT, số 3", "MẬT.", "(MẬT);", "TỐI MẬT!"],
    "compatibility forms": ["ＴỐＩ ＭẬＴ", "𝐓ỐI 𝐌ẬT", "TỐI MẬT"],
    "decomposed": [unicodedata.normalize("NFD", "TỐI MẬT"), unicodedata.normalize("NFD", "TUYỆT  MẬT")],
}


@pytest.mark.parametrize(
    "text", [pytest.param(text, id=f"{kind}-{i}") for kind, texts in EVASIONS.items() for i, text in enumerate(texts)]
)
def test_evasion_is_seen_by_the_body_rule(text: str) -> None:
    assert marked(text), (text, normalize(text))


@pytest.mark.parametrize(
    "subject",
    ["[TỐI\u00a0MẬT] Kế hoạch", "ТỐІ МẬТ: phương án", "T Ố I  M Ậ T", "Báo cáo (MẬT).", "Re: MẬT.", "TUYỆT\u2028MẬT"],
)
def test_evasion_is_seen_by_the_subject_rule(subject: str) -> None:
    assert SUBJECT.search(normalize(subject))


@pytest.mark.parametrize(
    "encoded",
    [
        "=?UTF-8*vi?B?" + base64.b64encode("[TỐI MẬT] Kế hoạch".encode()).decode() + "?=",
        "=?utf-8*vi-VN?Q?T=E1=BB=90I_M=E1=BA=ACT?=",
        "Re: =?UTF-8*vi?B?" + base64.b64encode("TUYỆT MẬT".encode()).decode() + "?=",
    ],
)
def test_encoded_word_with_a_language_tag_is_decoded(encoded: str) -> None:
    decoded = decode_header_value(encoded)
    assert "MẬT" in decoded and "*vi" not in decoded
    assert refused_by(message(encoded, "Gui anh.\n"), "secret-marking-subject")


@pytest.mark.parametrize(
    "markup",
    [
        "<html><head><meta charset=utf-8><p>TỐI MẬT</p></body></html>",  # <head> never closed
        "<html><head><title>Kế hoạch</title><body><div>TUYỆT MẬT</div>",
        "<head><style>p{}</style>Số 5 TỐI MẬT",  # text in head opens the body
        "<head><link rel=stylesheet href=x.css></head><body>TỐI&nbsp;M&#7852;T</body>",
        "<title><p>ignored markup</p></title><table><tr><td>MẬT</td></tr></table>",
    ],
)
def test_html_with_an_unclosed_head_is_read_as_browsers_do(markup: str) -> None:
    assert refused_by(message("Ke hoach", markup, html=True), "secret-marking-body")


@pytest.mark.parametrize(
    "markup",
    [
        "<p>TỐI M<span style='display:none'>x</span>ẬT</p>",  # junk hidden between the letters
        "<p>TỐI M<font style=\"font-size: 0px\">xx</font>ẬT</p>",
        "<p>TUYỆT <b style='color:#fff; visibility: hidden'>y</b>MẬT</p>",
        "<p>TỐI M<span hidden>z<span>z</span></span>ẬT</p>",
        "<p>TỐI MẬT<span style='opacity:0'>x",  # left open: it moves no further than its block
        "<p>Xem <span style='display:none'>TỐI MẬT</span> nhé</p>",  # shown by readers that ignore styles
    ],
)
def test_text_hidden_by_an_inline_style_neither_splits_nor_hides_a_marking(markup: str) -> None:
    assert refused_by(message("Ke hoach", markup, html=True), "secret-marking-body")


def test_an_empty_or_non_zero_style_value_hides_nothing() -> None:
    for style in ("font-size:;", "font-size: 10px", "opacity: 0.5", "x-display: none", "display: none-ish"):
        assert html_to_text(f"<p>a<span style='{style}'>x</span>b</p>").strip() == "axb", style


def test_hidden_html_stays_hidden_and_open_markup_is_bounded() -> None:
    assert "MẬT" not in html_to_text("<p>x</p><script>var s = 'TỐI MẬT'; if (a<b) {}</script><p>y</p>")
    assert "MẬT" not in html_to_text("<template><p>TỐI MẬT</p></template>")
    assert "MẬT" not in html_to_text("<style>/* TỐI MẬT */</style>")
    # an unclosed <script> hides the rest as in a browser, but only within the bound: held
    # markup past OPEN_MARKUP_LIMIT characters is passed on as text
    reader = HtmlText()
    text = reader.feed("<script>" + "x" * (textnorm.OPEN_MARKUP_LIMIT + 10))
    assert len(text) > textnorm.OPEN_MARKUP_LIMIT and len(reader._parser.rawdata) == 0
    text = reader.feed("TỐI MẬT</p>") + reader.close()
    assert "TỐI MẬT" in text
    reader = HtmlText()
    held = reader.feed("<a href='" + "y" * (textnorm.OPEN_MARKUP_LIMIT + 1))  # a tag that never ends
    assert len(held) > textnorm.OPEN_MARKUP_LIMIT


# ---- what must still pass ------------------------------------------------------------------------

MUST_PASS = [
    # the shipped guide and password sentences
    "HƯỚNG DẪN ĐỔI MẬT KHẨU HỘP THƯ CÔNG VỤ",
    "Mật khẩu mới của bạn",
    "MẬT KHẨU: đổi định kỳ",
    "QUY CHẾ BẢO MẬT THÔNG TIN",
    "Bảo vệ bí mật nhà nước",
    "Không gửi tài liệu tối mật qua thư",
    "Mật ong rừng Bắc Kạn",
    "MẬT MÃ - tập huấn",
    "Tôi mất điện thoại",
    "Mật độ dân số tỉnh Bắc Ninh năm 2024",
    "Tài liệu có ba độ mật: mật, tối mật và tuyệt mật; hướng dẫn này nói cách đóng dấu.",
    # Vietnamese single-letter words in a row are joined, and that joins nothing into a stamp
    "Anh ở à? Ý kiến ạ ở đây ạ.",
    "ở à ý ơ ừ ạ",
    "Ừ, ờ, à, ạ - ý của anh là gì?",
    "Phụ lục A, B, C kèm theo; điểm a, b, c khoản 2 Điều 8",
    "Điều 1, 2, 3 và các mục I. II. III.",
    # other scripts and exercises
    "Москва — столица России. Тайна переписки охраняется законом.",
    "Αθήνα, Ελλάδα: ΜΑΘΗΜΑΤΙΚΑ",
    "Bài tập: viết các chữ cái M A T H theo thứ tự; cho tam giác A B C vuông tại A.",
    "Đáp án: M.A.T.H, T.O.I, M.A.T không dấu",
    "Nhấn Ctrl + M → A → T để mở bảng",
    "BẢO MẬT\u00a0THÔNG TIN",
    "MẬT\u00a0KHẨU",
    "TỐI ƯU HÓA MẬT ĐỘ",
]


@pytest.mark.parametrize("text", MUST_PASS)
def test_must_pass_sentences(text: str) -> None:
    assert not BODY.search(normalize(text)), normalize(text)
    assert not SUBJECT.search(normalize(text)), normalize(text)


def test_must_pass_sentences_go_out_together() -> None:
    body = "\n".join(MUST_PASS) + "\n"
    result = harness().scan(message("Huong dan bao mat", body), **OUTBOUND)
    assert result.verdict.action is Action.ACCEPT, result.verdict
    html = "<html><head><title>Hướng dẫn</title><body>" + "".join(f"<p>{t}</p>" for t in MUST_PASS)
    assert harness().scan(message("Huong dan", html, html=True), **OUTBOUND).verdict.action is Action.ACCEPT


def test_normal_forms() -> None:
    assert normalize("ở à ý") == "ởàý"  # joined, harmlessly
    assert normalize("Москва") == "Mocквa"  # look-alike letters read as Latin, the others kept
    assert normalize("Ά") == "Á" and normalize("Ё") == "E"
    assert normalize("Điều 1, 2, 3") == "Điều 1, 2, 3"
    assert normalize("a\r\nb\rc\u2028d") == "a\nb\nc\nd"  # CRLF, a lone CR and U+2028 each end one line
    assert normalize("á\r\nb\rc\u2028d") == "á\nb\nc\nd"
    assert textnorm.normalize_pattern("Т\u00a0x") == "T x"  # patterns: the same letters, no joining
    assert textnorm.normalize_pattern("a b c d") == "a b c d"


VIETNAMESE = (
    "aàảãáạăằẳẵắặâầẩẫấậbcdđeèẻẽéẹêềểễếệghiìỉĩíịklmnoòỏõóọôồổỗốộơờởỡớợpqrstuùủũúụưừửữứựvxyỳỷỹýỵ"
)


def test_vietnamese_letters_never_change() -> None:
    letters = VIETNAMESE + VIETNAMESE.upper()
    assert normalize(letters) == letters
    assert not set(letters) & set(textnorm.LOOKALIKES)


def test_the_format_table_is_every_cf_character_of_this_python() -> None:
    table = {c for low, high in textnorm._FORMAT for c in range(low, high + 1)}
    cf = {c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"}
    assert cf <= table, sorted(hex(c) for c in cf - table)
    zs = {chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Zs"} - {" "}
    assert zs == set(textnorm._SPACES)
    for char in "\u00ad\u034f\u115f\u1160\u3164\uffa0\ufe00\ufe0f\U000e0001\U000e0041\U000e0100\u200b\u2060":
        assert normalize("á" + char + "b") == "áb", hex(ord(char))


def test_strip_diacritics_costs_no_list_of_characters() -> None:
    assert strip_diacritics("Tối mật, Đăng ký, Ủy ban “Москва й” ΆΈ") == "Toi mat, Dang ky, Uy ban “Москва и” ΑΕ"
    text = "\ufffd" * 1_000_000
    tracemalloc.start()
    try:
        assert strip_diacritics(text) == text
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12_000_000, peak  # a few copies of 2 MB, never a list of one-character strings (~100 MB)


@given(st.text(alphabet=st.sampled_from(list(VIETNAMESE + " .-\n\u0301\u0323ЀЁМАТ😀“–")), max_size=60))
@settings(max_examples=300, deadline=None)
def test_strip_diacritics_is_the_per_character_definition(text: str) -> None:
    decomposed = unicodedata.normalize("NFD", text)
    expected = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    expected = unicodedata.normalize("NFC", expected.replace("đ", "d").replace("Đ", "D"))
    assert strip_diacritics(text) == expected


# ---- all the text, in windows ------------------------------------------------------------------


class Pieces:
    """A stand-in text part that hands out its text in pieces only (as a spilled part does)."""

    def __init__(self, content_type: str, chunks: list[str]):
        self.content_type = content_type
        self.chunks = chunks
        self.length = sum(len(c) for c in chunks)

    def pieces(self, size: int = 65536) -> Iterator[str]:
        for chunk in self.chunks:
            for start in range(0, len(chunk), size):
                yield chunk[start : start + size]

    @property
    def text(self) -> str:
        raise AssertionError("the content check must read pieces, not the whole text")


def run_check(parts: list[Any], *, internal: bool = True, subject: str = "x", **overrides: Any) -> list[Verdict]:
    config = load_config(None, [f'rules.dir="{RULES}"', *(f"{k}={v}" for k, v in overrides.items())])
    ruleset = load_ruleset(RULES, rule_compilers())
    envelope = Envelope(client_ip="127.0.0.1" if internal else "127.0.0.3", trusted_relay=internal)
    facts = MessageFacts(texts=tuple(parts))
    tx = Transaction(envelope, ruleset, headers=[("Subject", subject)], facts_loader=lambda: facts)
    return list(ContentCheck(config, Metrics()).run(Stage.EOM, tx))


def fired(verdicts: list[Verdict]) -> list[str]:
    return [v.rule for v in verdicts if v.rule]


FILLER = "Báo cáo tình hình sử dụng hộp thư công vụ tháng 3, mật khẩu đổi định kỳ.\n"


def filler(size: int) -> str:
    return (FILLER * (size // len(FILLER) + 1))[:size]


def test_marking_after_one_and_a_half_mebibytes_is_seen() -> None:
    part = Pieces("text/plain", [filler(1_572_864), "Kèm theo kế hoạch TỐI\u00a0MẬT.\n"])
    verdicts = run_check([part])
    assert fired(verdicts) == ["secret-marking-body"] and verdicts[-1].refuses


def test_marking_in_a_later_part_and_in_html_is_seen() -> None:
    parts = [Pieces("text/plain", [filler(300_000)]), Pieces("text/html", ["<p>" + filler(900_000), "</p><p>MẬT</p>"])]
    assert fired(run_check(parts)) == ["secret-marking-body"]


@pytest.mark.parametrize("offset", [-7, -5, -3, -1, 0, 1, 3])
def test_a_match_across_a_window_boundary_is_found_once(offset: int) -> None:
    # the filler has no line break near the window's end: the window is cut inside the marking
    text = "x" * (WINDOW + offset) + " TỐI MẬT " + "y" * 10
    part = Pieces("text/plain", [text])
    verdicts = run_check([part])
    assert fired(verdicts) == ["secret-marking-body"]


def test_a_match_longer_than_the_overlap_may_be_missed_across_windows() -> None:
    """The documented limit: a body match must fit in the overlap to be seen across a boundary."""
    rules = (
        f'kind = "content"\n[[rule]]\nid = "long"\ntarget = "body"\npattern = "BEGIN x{{{OVERLAP + 10}}} END"\n'
        'action = "reject"\n'
    )
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "long.toml").write_text(rules)
        h = Harness(overrides=[f'rules.dir="{directory}"'], skip=OTHERS)
        short = "BEGIN " + "x" * (OVERLAP + 10) + " END"
        assert h.scan(message("x", short)).verdict.rule == "long"  # within one window: found
        missed = "z" * (WINDOW - 100) + " " + short  # begins in one window, ends in the next
        assert h.scan(message("x", missed)).verdict.action is Action.ACCEPT


def test_gtube_after_one_and_a_half_mebibytes_is_refused() -> None:
    part = Pieces("text/plain", [filler(1_572_864), "x" * 30 + GTUBE[:20], GTUBE[20:] + "\n"])
    verdicts = run_check([part], internal=False)
    assert "gtube" in fired(verdicts) and verdicts[-1].refuses and verdicts[-1].rule == "spam-score"


def test_memory_is_bounded_by_the_window_not_the_text() -> None:
    big = filler(8_000_000)  # 8 M characters, allocated before measuring
    part = Pieces("text/plain", [big])
    run_check([part])  # warm the caches (rule compilation, combining class)
    tracemalloc.start()
    try:
        verdicts = run_check([part], internal=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verdicts[-1].action is Action.CONTINUE
    assert peak < 8 * WINDOW * 4, peak  # a few windows of UCS-2/UCS-4 text, not 8 M characters


def test_reading_stops_once_every_rule_has_fired() -> None:
    seen = []

    class Counting(Pieces):
        def pieces(self, size: int = 65536) -> Iterator[str]:
            for piece in super().pieces(size):
                seen.append(len(piece))
                yield piece

    # every outbound body rule fires in the first lines: the regulation's, and the spam rules (they score
    # outbound mail too: a stolen account sends the spam it received)
    spam = "Chúc mừng bạn đã trúng thưởng. Vay tiền nhanh. Cá độ bóng đá. Xác nhận mật khẩu hộp thư.\n"
    spam += "Viagra. Nhân đôi bitcoin.\n"
    part = Counting("text/plain", ["TỐI MẬT\n" + spam + filler(4_000_000)])
    outbound_body_rules = ["account-phishing", "crypto-doubling", "pharma", "secret-marking-body", "vn-fast-loan",
                           "vn-gambling", "vn-prize"]  # fmt: skip
    assert sorted(fired(run_check([part], **{"content.gtube": "false"}))) == outbound_body_rules
    assert sum(seen) < 4 * WINDOW
    seen.clear()
    run_check([part])  # GTUBE is looked for in every message: then all the text is read
    assert sum(seen) == part.length


def test_a_real_text_part_is_read_through_its_pieces() -> None:
    verdicts = run_check([TextPart("text/plain", filler(200_000) + "\nMẬT\n")])
    assert fired(verdicts) == ["secret-marking-body"]


@given(st.lists(st.integers(1, 40), min_size=1, max_size=12))
@settings(max_examples=100, deadline=None)
def test_html_read_in_pieces_is_html_read_whole(cuts: list[int]) -> None:
    markup = (
        "<html><head><title>T&amp;t</title><style>p{}</style><p>Một&nbsp;hai</p><br/><div>ba <b>TỐI</b> MẬT</div>"
        "<!-- c --><script>x<y</script><template><p>h</p></template><p>cuối &#7852; &#x1EAC;</p></html>"
    )
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(markup[start : start + cut])
        start += cut
    pieces.append(markup[start:])
    reader = HtmlText()
    streamed = "".join(reader.feed(p) for p in pieces) + reader.close()
    squash = re.compile(r"\s+")
    assert squash.sub(" ", streamed).strip() == squash.sub(" ", html_to_text(markup)).strip()


# ---- links are read in pieces too ------------------------------------------------------------


def test_links_across_pieces_and_after_the_first_mebibyte() -> None:
    text = "a " * 700_000 + "xem http://spam-link.example.net/x va www.other.example.org nhe"
    cut = text.index("spam-link") + 4
    parts = [[text[:cut], text[cut:]]]  # the piece boundary falls inside the host name
    assert streamed_link_domains(parts, ["bacninh.gov.vn"], 20) == ["example.net", "spam-link.example.net",
                                                                    "example.org", "other.example.org"]
    assert streamed_link_domains(parts, ["bacninh.gov.vn"], 1) == ["example.net"]  # the stated bound
