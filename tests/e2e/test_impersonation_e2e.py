"""Impersonation through real Postfix: a representative dozen of the corpus (tests/checks/impersonation/corpus/).

The stack's dnsmasq also answers the SPF and DMARC records of the corpus's domains, with the
corpus's Internet addresses played by loopback clients: gdt.gov.vn's server is 127.0.0.5,
hanoi.gov.vn's 127.0.0.6, the allowed newsletter service 127.0.0.7, the partner egovtech.com.vn
127.0.0.8, any other Internet client 127.0.0.3. The rules are the shipped ones plus the
newsletter's [[allow]] entry. Each message is sent as its file, with the envelope of its sidecar.
"""

from __future__ import annotations

import email
import email.message
import re
import shutil
import tomllib
from collections.abc import Iterator

import pytest

from e2e.helpers import INTERNET_CLIENT, running_stack
from stack import ROOT, Reply, Stack

CORPUS = ROOT / "tests" / "checks" / "impersonation" / "corpus"
CLIENTS = {  # the corpus's addresses -> loopback clients
    "203.0.113.5": INTERNET_CLIENT,
    "203.0.113.10": "127.0.0.5",
    "203.0.113.20": "127.0.0.6",
    "198.51.100.25": "127.0.0.7",
    "198.51.100.7": "127.0.0.8",
}
TXT = [
    ("bacninh.gov.vn", "v=spf1 ip4:10.1.2.0/24 -all"),
    ("_dmarc.bacninh.gov.vn", "v=DMARC1; p=none"),
    ("gdt.gov.vn", "v=spf1 ip4:127.0.0.5 -all"),
    ("_dmarc.gdt.gov.vn", "v=DMARC1; p=none"),
    ("hanoi.gov.vn", "v=spf1 ip4:127.0.0.6 -all"),
    ("egovtech.com.vn", "v=spf1 ip4:127.0.0.8 -all"),
]
ALLOW = """
[[allow]]
id = "so-tttt-newsletter"
domains = ["bantin.bacninh.gov.vn"]
networks = ["127.0.0.7/32"]
"""
ARTICLE = "Dieu 10.2.c"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    rules = tmp_path_factory.mktemp("imprules") / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    with (rules / "impersonation.toml").open("a") as handle:
        handle.write(ALLOW)
    yield from running_stack("govmilter-imp-e2e-", dns_txt=TXT, rules_source=rules)


def send(stack: Stack, name: str) -> tuple[Reply, str]:
    """Send corpus/NAME.eml with its sidecar's envelope; the reply and the message's Message-ID."""
    raw = (CORPUS / f"{name}.eml").read_bytes()
    side = tomllib.loads((CORPUS / f"{name}.toml").read_text())
    found = re.search(rb"^Message-ID: <([^>]+)>", raw, re.M)
    assert found
    reply = stack.send(side["mail_from"], side["rcpts"], raw, source_ip=CLIENTS[side["client_ip"]])
    return reply, found.group(1).decode()


def delivered(stack: Stack, message_id: str) -> email.message.Message:
    return stack.sink.find_id(message_id).message


def report(msg: email.message.Message) -> str:
    return " ".join(str(msg.get("X-Spam-Report", "")).split())


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("spoof-local-thongbao", "bacninh.gov.vn"),
        ("spoof-gdt", "gdt.gov.vn"),
        ("lookalike-gov-join-dash", "bacninh.gov.vn"),
        ("lookalike-prefix-link", "gdt.gov.vn"),
        ("lookalike-punycode", "gdt.gov.vn"),
        ("lookalike-reply-to-list", "gdt.gov.vn"),
        ("newsletter-outside-allowed-range", "bantin.bacninh.gov.vn"),
    ],
)
def test_impersonation_is_refused_naming_the_domain(stack: Stack, name: str, domain: str) -> None:
    reply, _ = send(stack, name)
    assert (reply.stage, reply.code) == ("data", 550), reply
    assert reply.text.startswith("5.7.1 "), reply
    assert f"ten mien {domain} " in reply.text and f"impersonates the state domain {domain}" in reply.text
    assert ARTICLE in reply.text


def test_a_state_name_on_gmail_is_delivered_with_its_score(stack: Stack) -> None:
    reply, mid = send(stack, "display-cuc-thue-gmail")
    assert reply.accepted, reply
    assert "impersonation/display-name-state-body=3" in report(delivered(stack, mid))


def test_the_2018_campaign_link_is_tagged(stack: Stack) -> None:
    reply, mid = send(stack, "link-2018-campaign")
    assert reply.accepted, reply
    msg = delivered(stack, mid)
    assert msg["X-Spam-Flag"] == "YES"
    assert "impersonation/link-text-government=5" in report(msg) and "impersonation/link-shortener" in report(msg)


@pytest.mark.parametrize("name", ["legit-gdt", "reply-diversion-gdt", "dmarc-pass-lookalike-link-not-refused"])
def test_mail_that_passes_dmarc_for_a_government_domain_is_delivered(stack: Stack, name: str) -> None:
    reply, mid = send(stack, name)
    assert reply.accepted, reply
    msg = delivered(stack, mid)
    results = " ".join(str(v) for v in msg.get_all("Authentication-Results", []))
    assert "dmarc=pass" in results and "header.from=gdt.gov.vn" in results, results
    if name == "legit-gdt":
        assert "impersonation/" not in report(msg)


@pytest.mark.parametrize("name", ["legit-partner-gov-in-name", "legit-newsletter-allowed", "legit-hanoi-spf-aligned"])
def test_legitimate_look_alikes_are_delivered_untouched(stack: Stack, name: str) -> None:
    reply, mid = send(stack, name)
    assert reply.accepted, reply
    assert "impersonation/" not in report(delivered(stack, mid))
