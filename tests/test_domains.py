"""Domain classes: label boundaries, case, trailing dots, IDNA."""

from __future__ import annotations

import pytest

from govmilter.domains import (
    DomainClass,
    Domains,
    domain_of,
    is_under,
    normalize_address,
    normalize_domain,
    registered_domain,
    split_address,
)

DOMAINS = Domains.from_names(["bacninh.gov.vn"], ["gov.vn", "backan.edu.vn"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gov.vn", "gov.vn"),
        ("GOV.VN.", "gov.vn"),
        ("  Hanoi.Gov.Vn  ", "hanoi.gov.vn"),
        ("bắcninh.gov.vn", "xn--bcninh-pf8b.gov.vn"),
        ("BẮCNINH.GOV.VN", "xn--bcninh-pf8b.gov.vn"),
        ("xn--bcninh-pf8b.gov.vn", "xn--bcninh-pf8b.gov.vn"),
        ("bacninh\u3002gov\uff0evn", "bacninh.gov.vn"),  # IDNA's other full stops
        ("gov..vn", ""),
        ("", ""),
        (".", ""),
        ("[192.0.2.1]", ""),
        ("a" * 300 + ".vn", ""),
    ],
)
def test_normalize_domain(name: str, expected: str) -> None:
    assert normalize_domain(name) == expected


def test_is_under_respects_label_boundaries() -> None:
    assert is_under("gov.vn", "gov.vn")
    assert is_under("so.hanoi.gov.vn", "gov.vn")
    assert not is_under("evilgov.vn", "gov.vn")
    assert not is_under("gov.vn.evil.com", "gov.vn")
    assert not is_under("", "gov.vn")
    assert not is_under("gov.vn", "")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@bacninh.gov.vn", DomainClass.LOCAL),
        ("user@sotttt.bacninh.gov.vn", DomainClass.LOCAL),
        ("USER@BACNINH.GOV.VN.", DomainClass.LOCAL),
        ("<user@bacninh.gov.vn>", DomainClass.LOCAL),
        ("user@hanoi.gov.vn", DomainClass.GOVERNMENT),
        ("user@gov.vn", DomainClass.GOVERNMENT),
        ("user@GOV.VN.", DomainClass.GOVERNMENT),
        ("user@bắcgiang.gov.vn", DomainClass.GOVERNMENT),
        ("user@xn--bcgiang-hq4c.gov.vn", DomainClass.GOVERNMENT),
        ("user@truong.backan.edu.vn", DomainClass.GOVERNMENT),
        ("user@edu.vn", DomainClass.OTHER),
        ("user@evilgov.vn", DomainClass.OTHER),
        ("user@gov.vn.evil.com", DomainClass.OTHER),
        ("user@bacninh.gov.vn.evil.com", DomainClass.OTHER),
        ("user@notbacninh.gov.vn", DomainClass.GOVERNMENT),  # under gov.vn, not under the local name
        ("user@gmail.com", DomainClass.OTHER),
        ("user@[10.0.0.1]", DomainClass.OTHER),
        ("hanoi.gov.vn", DomainClass.GOVERNMENT),  # a bare domain (SRS forwarder)
        ("", DomainClass.OTHER),
        ("@", DomainClass.OTHER),
    ],
)
def test_classify(address: str, expected: DomainClass) -> None:
    assert DOMAINS.classify(address) is expected


def test_local_is_government() -> None:
    assert DomainClass.LOCAL.government and DomainClass.GOVERNMENT.government
    assert not DomainClass.OTHER.government
    # a local domain outside gov.vn is still a state body's domain
    domains = Domains.from_names(["backan.edu.vn"], ["gov.vn"])
    assert domains.is_government("a@backan.edu.vn") and domains.is_local("a@backan.edu.vn")


def test_configured_names_are_normalised_and_checked() -> None:
    domains = Domains.from_names(["BacNinh.Gov.Vn."], ["*.gov.vn", "@Backan.edu.vn"])
    assert domains.local == ("bacninh.gov.vn",)
    assert domains.government == ("gov.vn", "backan.edu.vn")
    with pytest.raises(ValueError, match="not a domain"):
        Domains.from_names(["bad..name"], [])


def test_addresses() -> None:
    assert split_address("<@relay.example,@b.example:user@example.com>") == ("user", "example.com")
    assert split_address('"odd@local"@example.com') == ('"odd@local"', "example.com")
    assert split_address("postmaster") == ("postmaster", "")
    assert normalize_address("User@Example.COM.") == "user@example.com"
    assert normalize_address("") == ""
    assert domain_of("a@Hanoi.Gov.Vn") == "hanoi.gov.vn"
    assert domain_of("hanoi.gov.vn") == "hanoi.gov.vn"


@pytest.mark.parametrize(
    ("host", "registered"),
    [
        ("a.b.shop.com.vn", "shop.com.vn"),
        ("mail.bacninh.gov.vn", "bacninh.gov.vn"),  # gov.vn is a public suffix: each province registers its own
        ("sotttt.hanoi.gov.vn", "hanoi.gov.vn"),
        ("x.y.khuyenmai.id.vn", "khuyenmai.id.vn"),  # id.vn, io.vn, ai.vn: second-level names for anyone
        ("trung.thuong.io.vn", "thuong.io.vn"),
        ("vay.ai.vn", "vay.ai.vn"),
        ("www.xoso.hanoi.vn", "xoso.hanoi.vn"),  # the provincial names under .vn are public suffixes
        ("a.b.danang.vn", "b.danang.vn"),
        ("mail.example.co.uk", "example.co.uk"),
        ("x.y.example.org", "example.org"),
        ("gov.vn", "gov.vn"),  # a public suffix itself is returned as it is
        ("io.vn", "io.vn"),
        ("vn", "vn"),
    ],
)
def test_registered_domain_follows_the_public_suffix_list(host: str, registered: str) -> None:
    assert registered_domain(host) == registered


def test_the_public_suffix_list_is_the_bundled_one_and_knows_the_vietnamese_names() -> None:
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()  # the list shipped inside the package, read from disk: no download
    for suffix in ("gov.vn", "id.vn", "io.vn", "ai.vn", "hanoi.vn", "bacninh.vn", "com.vn"):
        assert psl.is_public(suffix), suffix
    assert not psl.is_public("bacninh.gov.vn")
