"""names.py: the skeleton of a name and the look-alike shapes, with the spellings attackers use."""

from __future__ import annotations

import pytest

from govmilter.checks.impersonation.names import Protected, body_of, distance, skeleton
from govmilter.domains import normalize_domain

PROTECTED = Protected(["bacninh.gov.vn", "gdt.gov.vn", "chinhphu.vn", "dichvucong.gov.vn"], ["gov.vn"], 2)
CYR_O, CYR_I, CYR_A = "\u043e", "\u0456", "\u0430"


@pytest.mark.parametrize(
    ("name", "shape", "protected"),
    [
        ("bacninh.gov.vn.com", "prefix", "bacninh.gov.vn"),
        ("gdt.gov.vn.tax-notice.com", "prefix", "gdt.gov.vn"),
        ("mail.gdt.gov.vn.evil.example", "prefix", "gdt.gov.vn"),
        ("x.gov.vn.evil.com", "prefix", "gov.vn"),
        ("chinhphu.vn.info", "prefix", "chinhphu.vn"),
        (f"bacninh.g{CYR_O}v.vn.com", "prefix", "bacninh.gov.vn"),  # a look-alike that also goes on
        (f"gdt.g{CYR_O}v.vn", "confusable", "gdt.gov.vn"),
        ("gdt." + f"g{CYR_O}v".encode("idna").decode() + ".vn", "confusable", "gdt.gov.vn"),  # punycode
        (f"hanoi.g{CYR_O}v.vn", "confusable", "gov.vn"),  # under gov.vn, not listed
        ("bắcninh.gov.vn.net", "prefix", "bacninh.gov.vn"),
        (f"dichvuc{CYR_O}ng.gov.vn.com", "prefix", "dichvucong.gov.vn"),
        ("chinhph\u00fa.vn", "confusable", "chinhphu.vn"),  # a mark on a letter
        ("bac\u200eninh.gov.vn", "confusable", "bacninh.gov.vn"),  # a bidi mark IDNA refuses: judged as written
        ("bacninh-gov.vn", "gov-join", "bacninh.gov.vn"),
        ("bacninhgov.vn", "gov-join", "bacninh.gov.vn"),
        ("bacninh-gov-vn.com", "gov-join", "bacninh.gov.vn"),
        ("gdt-gov.info", "gov-join", "gdt.gov.vn"),
        ("mail.gdt-gov.info", "gov-join", "gdt.gov.vn"),
        ("gov-gdt.com", "gov-join", "gdt.gov.vn"),
        (f"bacn{CYR_I}nhgov.vn", "gov-join", "bacninh.gov.vn"),
        ("BACNINH-GOV.VN.", "gov-join", "bacninh.gov.vn"),
        ("\uff47\uff44\uff54-gov.info", "gov-join", "gdt.gov.vn"),  # fullwidth
        ("bacninh\u3002gov\uff0evn\u3002com", "prefix", "bacninh.gov.vn"),  # IDN dots
        ("bacnlnh.com", "near", "bacninh.gov.vn"),
        ("bacn1nh.com", "near", "bacninh.gov.vn"),
        ("chinh-phu.vn", "near", "chinhphu.vn"),
        ("chinhphu.com", "near", "chinhphu.vn"),
        ("dichvuc0ng.com", "near", "dichvucong.gov.vn"),
    ],
)
def test_look_alike_shapes(name: str, shape: str, protected: str) -> None:
    found = PROTECTED.judge(name)
    assert found is not None, name
    assert (found.shape, found.protected) == (shape, protected)


@pytest.mark.parametrize(
    "name",
    [
        "bacninh.gov.vn",
        "BACNINH.GOV.VN.",
        "mail.bacninh.gov.vn",
        "bac\u200bninh.gov.vn",  # ours: not look-alikes
        "gdt.gov.vn",
        "thuedientu.gdt.gov.vn",
        "hanoi.gov.vn",
        "chinhphu.vn",
        "xaphuong.gov.vn",
        "egovtech.com.vn",
        "govtech.vn",
        "egov-solutions.com",
        "gmail.com",
        "bit.ly",
        "vietcombank.com.vn",
        "gdt.com",  # a body name of 3 letters has no near misses
        "baobacninh.vn",  # three letters more: not near
        "thue-bacninh.com",  # stated: a word swap is none of the shapes
    ],
)
def test_names_that_are_not_look_alikes(name: str) -> None:
    assert PROTECTED.judge(name) is None, (name, PROTECTED.judge(name))


def test_the_skeleton_reads_what_a_reader_sees() -> None:
    assert skeleton(normalize_domain(f"gdt.g{CYR_O}v.vn")) == "gdt.gov.vn"
    assert skeleton(f"b{CYR_A}cninh.gov.vn") == "bacninh.gov.vn"
    assert skeleton("bắc-ninh.vn") == "bac-ninh.vn"
    assert skeleton("đồng-nai.vn") == "dong-nai.vn"
    assert skeleton("g0v.vn") == "gov.vn" and skeleton("gdt1.vn") == "gdtl.vn"


def test_bodies_and_distance() -> None:
    assert body_of("bacninh.gov.vn") == "bacninh" and body_of("thuedientu.gdt.gov.vn") == "gdt"
    assert body_of("gov.vn") == "" and body_of("vn") == ""
    assert distance("bacninh", "bacnlnh", 2) == 1
    assert distance("bacninh", "baobacninh", 2) == 3  # past the limit: limit + 1
    assert distance("abc", "abc", 0) == 0


def test_near_distance_zero_turns_near_misses_off() -> None:
    strict = Protected(["bacninh.gov.vn"], ["gov.vn"], 0)
    assert strict.judge("bacnlnh.com") is None
    assert strict.judge("bacninh.com") is None
    assert strict.judge("bacninh-gov.com") is not None  # the refusing shapes stay
