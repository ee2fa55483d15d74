"""The impersonation corpus: every message of corpus/ gets the verdict its sidecar expects.

corpus/NAME.eml beside NAME.toml (the `govmilter rules test` format: envelope, expect,
must_hit, must_not_hit). The sender authentication is real: a private dnsmasq answers
the SPF and DMARC records of the domains below, and the auth check leaves its summary
for the impersonation check as in the daemon. The rules are the shipped ones, plus one
[[allow]] entry (the department's newsletter) in a copy of rules/impersonation.toml.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from govmilter.model import AUTH_SUMMARY_KEY, Action, AuthSummary
from govmilter.offline import check_sample
from govmilter.pipeline import CHECK_NAMES
from stack import Dns, free_dns_port
from support.harness import RULES, Harness

CORPUS = Path(__file__).resolve().parent / "corpus"
SAMPLES = sorted(CORPUS.glob("*.eml"))
RUN = ("forwarding", "size", "attachments", "auth", "impersonation", "content")  # no clamd, no blocklists
TXT = (
    ("bacninh.gov.vn", "v=spf1 ip4:10.1.2.0/24 -all"),  # our own domain: its mailbox servers only
    ("_dmarc.bacninh.gov.vn", "v=DMARC1; p=none"),
    ("gdt.gov.vn", "v=spf1 ip4:203.0.113.10 -all"),
    ("_dmarc.gdt.gov.vn", "v=DMARC1; p=none"),
    ("hanoi.gov.vn", "v=spf1 ip4:203.0.113.20 -all"),  # no DMARC record
    ("chinhphu.vn", "v=spf1 ip4:203.0.113.30 -all"),
    ("_dmarc.chinhphu.vn", "v=DMARC1; p=quarantine"),
    ("egovtech.com.vn", "v=spf1 ip4:198.51.100.7 -all"),
)
ALLOW = """
[[allow]]
id = "so-tttt-newsletter"
description = "the department's newsletter, sent by an outside service"
domains = ["bantin.bacninh.gov.vn"]
networks = ["198.51.100.0/24"]
"""


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dns]:
    dns = Dns(tmp_path_factory.mktemp("impzone") / "dns", free_dns_port(), records=(), ttl=300, txt=TXT)
    dns.start()
    yield dns
    dns.stop()


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("imprules") / "rules"
    shutil.copytree(RULES, copy, ignore=shutil.ignore_patterns("tests"))
    with (copy / "impersonation.toml").open("a") as handle:
        handle.write(ALLOW)
    return copy


@pytest.fixture(scope="module")
def harness(zone: Dns, rules: Path) -> Harness:
    skip = [name for name in CHECK_NAMES if name not in RUN]
    return Harness([f"dns.port={zone.port}", "dns.budget=5"], skip=skip, rules_dir=rules)


def test_the_corpus_has_what_the_issue_asks() -> None:
    names = [p.stem for p in SAMPLES]
    assert len(names) >= 40
    lookalikes = [n for n in names if n.startswith("lookalike-")]
    assert len(lookalikes) >= 10
    assert sum(n.startswith("legit-") for n in names) >= 4
    for path in SAMPLES:
        assert path.with_suffix(".toml").exists(), path


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_each_sample_gets_its_verdict(harness: Harness, path: Path) -> None:
    result = check_sample(harness.pipeline, harness.ruleset, harness.config, path)
    assert result.passed, f"{path.name}: {result.problems} (fired: {result.hits})"


def test_no_message_that_passes_dmarc_for_a_government_domain_is_refused_by_this_check(harness: Harness) -> None:
    """Every sample, whatever its expectation: where auth recorded a DMARC pass (or, without DMARC, an
    aligned SPF pass) for a government From domain, no refusal of the impersonation check."""
    passed = []
    for path in SAMPLES:
        side = tomllib.loads(path.with_suffix(".toml").read_text())
        result = harness.scan(path, mail_from=side["mail_from"], rcpts=side["rcpts"],
                              client_ip=side["client_ip"], auth_user=side.get("auth", ""))  # fmt: skip
        summary = result.tx.scratch.get(AUTH_SUMMARY_KEY)
        if not isinstance(summary, AuthSummary) or not summary.dmarc_domain.endswith(("gov.vn", "chinhphu.vn")):
            continue
        aligned = summary.dmarc == "none" and summary.spf == "pass" and summary.spf_domain == summary.dmarc_domain
        if summary.dmarc != "pass" and not aligned:
            continue
        passed.append(path.stem)
        refused = [h for h in result.tx.hits if h.check == "impersonation" and h.action is not Action.CONTINUE]
        assert refused == [], (path.name, refused)
    # the corpus holds such messages, some with findings that would refuse any other message
    assert {
        "legit-gdt",
        "legit-hanoi-spf-aligned",
        "legit-chinhphu",
        "dmarc-pass-lookalike-link-not-refused",
        "reply-diversion-gdt",
    } <= set(passed), passed


def test_the_corpus_through_the_command_line(zone: Dns, rules: Path) -> None:
    """`govmilter rules test` (the officers' tool, the same scan as `govmilter scan`) agrees, with auth on."""
    done = subprocess.run(
        [sys.executable, "-m", "govmilter", "rules", "test", str(CORPUS), "--rules", str(rules), "--with", "auth",
         "--set", f"dns.port={zone.port}", "--set", "dns.budget=5", "--set", "network.gateway_host=[]"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"{len(SAMPLES)} samples: {len(SAMPLES)} passed" in done.stdout
