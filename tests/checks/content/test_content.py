"""The content check: the shipped regulation rules, officers' rules, normalisation and scoring."""

from __future__ import annotations

import base64
import io
import tomllib
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

import pytest

from govmilter.checks.content.check import GTUBE, ContentRule, ContentRules, compile_rules
from govmilter.model import Action, Mode, Stage
from govmilter.offline import ScanResult
from govmilter.pipeline import CHECK_NAMES, rule_compilers
from govmilter.ruleset import RuleErrors, RuleFile, load_ruleset
from govmilter.text.normalize import decode_header_value, html_to_text, normalize, strip_diacritics
from support.harness import MESSAGES, RULES, Harness

SPAM = MESSAGES / "spam"
# the content check alone (dnsbl needs a resolver: tests/checks/test_dnsbl.py)
OTHERS = [name for name in CHECK_NAMES if name != "content"]
OUTBOUND: dict[str, Any] = {
    "client_ip": "127.0.0.1",  # the trusted internal relay
    "mail_from": "a.nguyen@bacninh.gov.vn",
    "rcpts": ["partner@example.com"],
}
INBOUND: dict[str, Any] = {"client_ip": "127.0.0.3", "mail_from": "a@example.com", "rcpts": ["user@bacninh.gov.vn"]}


def shipped() -> dict[str, ContentRule]:
    rules = load_ruleset(RULES, rule_compilers()).get("content")
    assert isinstance(rules, ContentRules)
    return {rule.id: rule for rule in rules.rules}


def rule_file(text: str, path: str = "rules/content-test.toml") -> RuleFile:
    return RuleFile(path, text, tomllib.loads(text))


def harness(rules_dir: Path | None = None, *overrides: str) -> Harness:
    return Harness(overrides=list(overrides), skip=OTHERS, rules_dir=rules_dir)


def custom(tmp_path: Path, rules: str) -> Harness:
    (tmp_path / "content.toml").write_text('kind = "content"\n' + rules, encoding="utf-8")
    return harness(tmp_path)


def message(subject: str, body: str, *, html: bool = False, sender: str = "sender@example.com") -> bytes:
    kind = "html" if html else "plain"
    return (
        f"From: <{sender}>\r\nTo: <user@bacninh.gov.vn>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    ).encode()


def headers(result: ScanResult) -> dict[str, str]:
    return dict(result.verdict.headers)


def rules_hit(result: ScanResult) -> list[str]:
    return [h.rule for h in result.tx.hits if h.check == "content" and h.rule]


# ---- state-secret markings (Bac Ninh Dieu 6.1, Quang Ninh 1.3(1)) ------------------------------

SUBJECT_MARKED = [
    "[TỐI MẬT] Kế hoạch triển khai",
    "MẬT - Báo cáo tình hình",
    "TUYỆT MẬT: phương án",
    "Re: [MẬT] Báo cáo quý III",
    "Báo cáo (MẬT)",
    "Fwd: TỐI MẬT",
    "KẾ HOẠCH TUYỆT MẬT SỐ 12",
    "«MẬT» số 5",
]
SUBJECT_CLEAN = [
    "HƯỚNG DẪN ĐỔI MẬT KHẨU HỘP THƯ CÔNG VỤ",
    "Mật khẩu mới của bạn",
    "MẬT KHẨU: đổi định kỳ",
    "QUY CHẾ BẢO MẬT THÔNG TIN",
    "Bảo vệ bí mật nhà nước",
    "Không gửi tài liệu tối mật qua thư",  # the words in a sentence, not the stamp
    "Mật ong rừng Bắc Kạn",
    "MẬT MÃ - tập huấn",
    "Tôi mất điện thoại",
]


@pytest.mark.parametrize("subject", SUBJECT_MARKED)
def test_secret_marking_in_the_subject_fires(subject: str) -> None:
    assert shipped()["secret-marking-subject"].regex.search(normalize(subject))


@pytest.mark.parametrize("subject", SUBJECT_CLEAN)
def test_password_and_security_words_are_not_markings(subject: str) -> None:
    rules = shipped()
    assert not rules["secret-marking-subject"].regex.search(normalize(subject))
    assert not rules["secret-marking-body"].regex.search(normalize(subject))


def test_nfd_subject_is_matched_as_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "[TỐI MẬT] Kế hoạch")
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    assert shipped()["secret-marking-subject"].regex.search(normalize(decomposed))


def test_outbound_marked_subject_is_refused() -> None:
    result = harness().scan(SPAM / "secret-subject.eml", **OUTBOUND)
    assert result.verdict.refuses and result.stage is Stage.EOM
    assert result.verdict.rule == "secret-marking-subject"
    reply = result.verdict.smtp_reply()
    assert reply.startswith("550 5.7.1 Thu mang dau mat") and "Dieu 6.1" in reply and "1.3(1)" in reply
    assert reply.isascii() and "%" not in reply


def test_authenticated_sender_is_outbound_too() -> None:
    result = harness().scan(SPAM / "secret-subject.eml", client_ip="127.0.0.3", auth_user="a.nguyen")
    assert result.verdict.rule == "secret-marking-subject" and result.verdict.refuses


def test_inbound_marked_subject_is_not_this_rule() -> None:
    result = harness().scan(SPAM / "secret-subject.eml", **INBOUND)
    assert result.verdict.action is Action.ACCEPT
    assert "secret-marking-subject" not in rules_hit(result)


def test_marking_stamped_in_a_base64_html_table_is_refused() -> None:
    result = harness().scan(SPAM / "secret-body-html.eml", **OUTBOUND)
    assert result.verdict.rule == "secret-marking-body" and result.verdict.refuses


def test_password_notice_goes_out() -> None:
    result = harness().scan(SPAM / "password-notice.eml", **OUTBOUND)
    assert result.verdict.action is Action.ACCEPT
    assert rules_hit(result) == []
    assert headers(result)["X-Spam-Score"] == "0.0"


def test_secret_attachment_name_is_enforced() -> None:
    result = harness().scan(SPAM / "secret-attachment.eml", **OUTBOUND)
    assert result.verdict.refuses and result.verdict.rule == "secret-marking-attachment-words"
    assert shipped()["secret-marking-attachment"].mode is Mode.ENFORCE
    assert shipped()["secret-marking-attachment-words"].mode is Mode.ENFORCE


ATTACHMENT_MARKED = [
    "Báo cáo tối mật quý III.pdf",
    "TỐI MẬT - Kế hoạch.docx",
    "Tối mật_Báo cáo.pdf",
    "Báo cáo [tối mật].pdf",
    "KH_TUYỆT_MẬT_2024.xlsx",
    "ke-hoach-TUYỆT-MẬT.pptx",
    "Hướng dẫn TỐI MẬT.docx",  # a stamp in capitals is a stamp, whatever the words around it
]
ATTACHMENT_CLEAN = [
    "huong-dan-phan-loai-do-mat.pdf",
    "mat-khau.txt",
    "mat-do-dan-so.xlsx",
    "toi_mat.docx",  # no diacritics: "tôi mất", "tối mặt"... read the same
    "Hướng dẫn phân loại tài liệu tối mật.pdf",
    "Danh mục bí mật nhà nước độ Tối mật, Tuyệt mật.docx",
    "Quy chế bảo vệ bí mật nhà nước.pdf",
    "Quy định về tài liệu tuyệt mật.docx",
    "Tập huấn xác định độ mật.pptx",
    "Mật khẩu hộp thư.txt",
    "Tôi mất điện thoại.jpg",
]


def secret_name(name: str) -> bool:
    """The two secret-marking-attachment rules, as the check runs them on one file name."""
    text = normalize(name)
    rules = shipped()
    stamps, words = rules["secret-marking-attachment"], rules["secret-marking-attachment-words"]
    assert stamps.matcher is not None and words.matcher is not None
    if stamps.matcher.search(text) is not None:
        return True
    return words.matcher.search(text) is not None and not words.vetoed(text)


@pytest.mark.parametrize("name", ATTACHMENT_MARKED)
def test_secret_file_names_fire(name: str) -> None:
    assert secret_name(name)


@pytest.mark.parametrize("name", ATTACHMENT_CLEAN)
def test_guides_and_password_files_are_not_secret_names(name: str) -> None:
    assert not secret_name(name)


def test_guide_attachment_goes_out() -> None:
    raw = (
        "From: <a.nguyen@bacninh.gov.vn>\r\nTo: <partner@example.com>\r\nSubject: Huong dan\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nxem tep\r\n'
        "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;"
        " filename*=utf-8''H%C6%B0%E1%BB%9Bng%20d%E1%BA%ABn%20ph%C3%A2n%20lo%E1%BA%A1i%20t%C3%A0i%20li%E1%BB%87u"
        "%20t%E1%BB%91i%20m%E1%BA%ADt.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n"
    )
    result = harness().scan(raw, **OUTBOUND)
    assert result.verdict.action is Action.ACCEPT, result.verdict
    assert not [rule for rule in rules_hit(result) if rule.startswith("secret-marking-attachment")]


# ---- registration mail at official mailboxes (Bac Ninh Dieu 8.4, Quang Ninh 1.3(3)) -------------


def test_registration_mail_is_tagged_in_monitor_mode() -> None:
    h = harness()
    result = h.scan(SPAM / "facebook-registration.eml", **INBOUND)
    assert result.verdict.action is Action.ACCEPT
    tags = [value for name, value in result.verdict.headers if name == "X-Govmilter-Monitor"]
    assert tags == [
        "check=content rule=registration-social-sender would=reject",
        "check=content rule=registration-confirmation would=reject",
    ]
    sample = {"check": "content", "rule": "registration-social-sender", "mode": "monitor"}
    assert h.metrics.registry.get_sample_value("govmilter_rule_hits_total", sample) == 1


def test_spoofed_social_domain_is_not_a_registration() -> None:
    rule = shipped()["registration-social-sender"]
    assert rule.regex.search("Facebook <security@facebookmail.com>")
    assert rule.regex.search("notify@mail.shopee.vn")
    assert not rule.regex.search("x <a@facebook.com.evil.example>")
    assert not rule.regex.search("a@notfacebook.company.vn")


# ---- spam rules, GTUBE and the score -----------------------------------------------------------


def test_spam_without_diacritics_adds_up_to_a_refusal() -> None:
    result = harness().scan(SPAM / "vn-spam-nodiacritics.eml", **INBOUND)
    assert sorted(rules_hit(result)) == ["spam-score", "vn-fast-loan", "vn-gambling", "vn-prize"]
    assert result.verdict.refuses and result.verdict.rule == "spam-score"
    reply = result.verdict.smtp_reply()
    assert reply.startswith("550 5.7.1 Thu bi tu choi vi bi bo loc danh gia la thu rac (QD 06/2022 Dieu 8.3")
    assert "(score 10.0, limit 10.0)" in reply and reply.isascii() and "%" not in reply
    assert "vn-" not in reply  # an outside sender reads no internal rule ids


def test_a_spam_refusal_names_the_rules_to_an_internal_sender_only(tmp_path: Path) -> None:
    (tmp_path / "content.toml").write_text(
        'kind = "content"\n[[rule]]\nid = "bulk-prize"\npattern = "trung thuong"\nscore = 12\n', encoding="utf-8"
    )
    data = message("Thong bao", "Ban da trung thuong.")
    inside = {"client_ip": "127.0.0.3", "auth_user": "a.nguyen", "mail_from": "a.nguyen@bacninh.gov.vn"}
    reply = harness(tmp_path).scan(data, **inside, rcpts=["x@example.com"]).verdict.smtp_reply()
    assert reply.startswith("550 5.7.1 Thu bi tu choi vi bi bo loc danh gia la thu rac, diem 12.0")
    assert "content/bulk-prize" in reply
    outside = harness(tmp_path).scan(data, **INBOUND).verdict.smtp_reply()
    assert outside.startswith("550 5.7.1 Thu bi tu choi") and "bulk-prize" not in outside
    shown = harness(tmp_path, 'content.reply_text_spam_inbound="spam: {rules}"').scan(data, **INBOUND)
    assert shown.verdict.smtp_reply() == "550 5.7.1 spam: content/bulk-prize"  # the operator chose to show them


def test_gtube_is_refused() -> None:
    h = harness()
    result = h.scan(SPAM / "gtube.eml", **INBOUND)
    assert rules_hit(result) == ["gtube", "spam-score"]
    assert result.verdict.refuses
    assert h.metrics.registry.get_sample_value("govmilter_spam_score_count") == 1


def test_gtube_can_be_turned_off() -> None:
    result = harness(None, "content.gtube=false").scan(SPAM / "gtube.eml", **INBOUND)
    assert result.verdict.action is Action.ACCEPT


def test_clean_official_mail_passes_with_its_score_header() -> None:
    for envelope in (INBOUND, OUTBOUND):
        result = harness().scan(SPAM / "clean-official.eml", **envelope)
        assert result.verdict.action is Action.ACCEPT
        assert headers(result)["X-Spam-Score"] == "0.0"
        assert "X-Spam-Flag" not in headers(result) and "X-Spam-Report" not in headers(result)


def test_tag_threshold_adds_flag_and_report(tmp_path: Path) -> None:
    h = custom(
        tmp_path,
        """
[[rule]]
id = "promo"
target = "header"
header = "Subject"
pattern = "khuyến mãi"
ignore_diacritics = true
score = 6

[[rule]]
id = "trusted-partner"
target = "header"
header = "From"
pattern = "@partner\\\\.example>?$"
score = -1.5

[[rule]]
id = "trial"
target = "body"
pattern = "giam gia"
score = 3
mode = "monitor"
""",
    )
    result = h.scan(message("KHUYEN MAI cuoi nam", "Giam gia 50 phan tram", sender="a@partner.example"))
    assert result.verdict.action is Action.ACCEPT
    got = headers(result)
    assert "X-Spam-Flag" not in got and got["X-Spam-Score"] == "4.5"  # 6 - 1.5, the monitored 3 not added
    assert got["X-Spam-Report"] == (
        "score=4.5 tag=5 reject=10 rules: content/promo=6 content/trusted-partner=-1.5 content/trial=3(monitor)"
    )
    result = h.scan(message("Khuyến mãi", "x"))
    assert headers(result)["X-Spam-Flag"] == "YES" and headers(result)["X-Spam-Score"] == "6.0"
    assert [h.rule for h in result.tx.hits][-1] == "spam-tag"


def test_thresholds_come_from_the_configuration(tmp_path: Path) -> None:
    rules = '[[rule]]\nid = "promo"\ntarget = "header"\nheader = "Subject"\npattern = "promo"\nscore = 6\n'
    (tmp_path / "content.toml").write_text('kind = "content"\n' + rules)
    strict = harness(tmp_path, "content.tag_threshold=2", "content.reject_threshold=5")
    assert strict.scan(message("promo", "x")).verdict.refuses
    lenient = harness(tmp_path, "content.tag_threshold=7", "content.reject_threshold=20")
    assert "X-Spam-Flag" not in headers(lenient.scan(message("promo", "x")))


def test_diacritics_option(tmp_path: Path) -> None:
    h = custom(
        tmp_path,
        """
[[rule]]
id = "bare"
pattern = "trúng thưởng"
ignore_diacritics = true
score = 1

[[rule]]
id = "exact"
pattern = "trúng thưởng"
score = 1
""",
    )
    assert rules_hit(h.scan(message("x", "Ban da TRUNG THUONG"))) == ["bare"]
    assert rules_hit(h.scan(message("x", "Bạn đã trúng thưởng"))) == ["bare", "exact"]
    nfd = unicodedata.normalize("NFD", "Bạn đã trúng thưởng")
    assert rules_hit(h.scan(message("x", nfd))) == ["bare", "exact"]
    assert rules_hit(h.scan(message("x", "trúng\u200bthưởng"))) == []  # an invisible space is no space
    assert rules_hit(h.scan(message("x", "trú\u200bng thư\u00adởng"))) == ["bare", "exact"]


def test_case_sensitivity(tmp_path: Path) -> None:
    h = custom(
        tmp_path,
        """
[[rule]]
id = "upper"
pattern = "KHẨN"
case_sensitive = true
score = 1

[[rule]]
id = "any-case"
pattern = "khẩn"
score = 1
""",
    )
    assert rules_hit(h.scan(message("x", "Công văn khẩn"))) == ["any-case"]
    assert rules_hit(h.scan(message("x", "HỎA TỐC - KHẨN"))) == ["upper", "any-case"]


def test_html_is_matched_as_the_reader_sees_it(tmp_path: Path) -> None:
    h = custom(
        tmp_path,
        """
[[rule]]
id = "phrase"
pattern = "vay tiền nhanh"
score = 1

[[rule]]
id = "in-script"
pattern = "hidden-script-word"
score = 1
""",
    )
    markup = "<p>Vay <b>ti&#7873;n</b>&nbsp;nhanh</p><script>var x='hidden-script-word'</script>"
    assert rules_hit(h.scan(message("x", markup, html=True))) == ["phrase"]


def test_header_rules_decode_rfc2047_and_survive_bad_charsets(tmp_path: Path) -> None:
    h = custom(
        tmp_path,
        """
[[rule]]
id = "subject-word"
target = "header"
header = ["Subject", "X-Extra"]
pattern = "đấu giá"
score = 1
""",
    )
    assert rules_hit(h.scan(message("=?UTF-8?B?VGjDtG5nIGLDoW8gxJHhuqV1IGdpw6E=?=", "x"))) == ["subject-word"]
    assert rules_hit(h.scan(message("=?x-unknown?Q?abc?= =?UTF-8?B?!!!?=", "x"))) == []
    raw = b"From: a@example.com\r\nTo: user@bacninh.gov.vn\r\nSubject: =?\xffutf-8?B?MA==?=\r\n\r\nhi\r\n"
    result = h.scan(raw)  # a charset label that is not ASCII (email.errors.CharsetError)
    assert result.verdict.action is Action.ACCEPT and rules_hit(result) == []


def test_attachment_names_include_archive_members(tmp_path: Path) -> None:
    h = custom(
        tmp_path,
        """
[[rule]]
id = "double-ext"
target = "attachment-name"
pattern = "\\\\.pdf\\\\.exe$"
score = 5
""",
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive_file:
        archive_file.writestr("hoadon.pdf.exe", b"MZ")
    archive = base64.b64encode(buffer.getvalue()).decode()
    raw = (
        "From: <a@example.com>\r\nTo: <user@bacninh.gov.vn>\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nxem\r\n'
        '--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename="hd.zip"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{archive}\r\n--b--\r\n"
    )
    assert rules_hit(h.scan(raw)) == ["double-ext", "spam-tag"]


def test_no_rule_files_still_recognises_gtube(tmp_path: Path) -> None:
    result = harness(tmp_path).scan(SPAM / "gtube.eml", **INBOUND)
    assert result.verdict.refuses and GTUBE


# ---- the rule file -----------------------------------------------------------------------------


def test_shipped_rules_compile() -> None:
    rules = shipped()
    assert {"secret-marking-subject", "secret-marking-body", "registration-social-sender"} <= set(rules)
    assert rules["secret-marking-subject"].mode is Mode.ENFORCE
    assert rules["registration-social-sender"].mode is Mode.MONITOR
    assert rules["secret-marking-subject"].direction == "outbound"


def test_every_problem_is_reported_with_its_line_and_id() -> None:
    first = rule_file('kind = "content"\n\n[[rule]]\nid = "dup"\npattern = "a"\nscore = 1\n', "rules/a.toml")
    text = """kind = "content"

[[rule]]
id = "broken-regex"
description = "unbalanced"
pattern = "(khuyến mãi"
score = 1

[[rule]]
id = "empty-match"
pattern = "x*"
score = 1

[[rule]]
id = "no-header"
target = "header"
pattern = "x"
score = 1

[[rule]]
id = "bad-reply"
pattern = "x"
action = "reject"
reply = "100% refused"

[[rule]]
id = "no-score"
pattern = "x"
direction = "sideways"

[[rule]]
id = "dup"
pattern = "x"
score = 1
colour = "red"
"""
    with pytest.raises(RuleErrors) as caught:
        compile_rules([first, rule_file(text, "rules/b.toml")])
    found = sorted((p.path, p.line, p.rule_id) for p in caught.value.problems)
    assert found == [
        ("rules/b.toml", 3 + 3, "broken-regex"),
        ("rules/b.toml", 11, "empty-match"),
        ("rules/b.toml", 14, "no-header"),
        ("rules/b.toml", 24, "bad-reply"),
        ("rules/b.toml", 26, "no-score"),
        ("rules/b.toml", 29, "no-score"),
        ("rules/b.toml", 32, "dup"),
    ]
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("rules/b.toml:6: broken-regex: pattern is not a valid regular expression")
    assert "rules/b.toml:32: dup: duplicate id (first defined in rules/a.toml:4)" in lines


def test_normalisation_helpers() -> None:
    assert strip_diacritics("Tối mật, Đăng ký, Ủy ban") == "Toi mat, Dang ky, Uy ban"
    assert normalize("a\u200bb\ufeffc") == "abc"
    assert decode_header_value("=?utf-8?q?T=E1=BB=91i_m=E1=BA=ADt?=") == "Tối mật"
    assert decode_header_value("plain \udcc3\udcb4") == "plain ô"  # raw UTF-8 carried as surrogates
    text = html_to_text("<html><head><title>t</title></head><body><div>a</div><div>b<br>c</div></body></html>")
    assert [line for line in text.splitlines() if line] == ["t", "a", "b", "c"]  # the title is read, alone
