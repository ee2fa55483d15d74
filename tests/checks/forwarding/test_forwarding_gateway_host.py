"""The gateway host ([network] gateway_host: 127.0.0.1 and ::1 by default) is never refused by the
forwarding check: cron and sendmail mail (which Postfix presents as 127.0.0.1 through
non_smtpd_milters) and a program on the gateway sending under another domain's name."""

from __future__ import annotations

import pytest

from govmilter.model import Action
from govmilter.pipeline import CHECK_NAMES
from support.harness import MESSAGES, Harness

ONLY_FORWARDING = [name for name in CHECK_NAMES if name != "forwarding"]
DEFAULT_GATEWAY = 'network.gateway_host=["127.0.0.1/32", "::1/128"]'  # the shipped default
RELAYS = (
    'network.trusted_relays=["127.0.0.1/32", "::1/128", "127.0.0.4/32"]'  # the gateway trusted, as the old docs said
)
ALERT = (
    b"From: alerts@monitoring.example.com\r\nTo: oncall@example.net\r\nSubject: disk 91%\r\n"
    b"Message-ID: <a1@monitoring.example.com>\r\n\r\n/var is 91% full\r\n"
)
CRON = (
    b"From: root@gw1 (Cron Daemon)\r\nTo: root\r\nSubject: Cron <root@gw1> logrotate\r\n"
    b"Auto-Submitted: auto-generated\r\nX-Cron-Env: <SHELL=/bin/sh>\r\n\r\nrotated\r\n"
)


@pytest.fixture(scope="module")
def gateway() -> Harness:
    return Harness([DEFAULT_GATEWAY, RELAYS], skip=ONLY_FORWARDING)


@pytest.mark.parametrize("client", ["127.0.0.1", "::1"])
def test_an_application_on_the_gateway_sending_as_another_domain_is_not_refused(gateway: Harness, client: str) -> None:
    result = gateway.scan(ALERT, mail_from="alerts@monitoring.example.com", rcpts=["oncall@example.net"],
                          client_ip=client)  # fmt: skip
    assert result.verdict.action is Action.ACCEPT
    hits = [h for h in result.tx.hits if h.check == "forwarding"]
    assert [h.rule for h in hits] == ["exempt-gateway-host"]
    assert "relay-inference" in hits[0].reason
    assert "exempt=gateway-host" in dict(result.verdict.headers)["X-Govmilter-Forwarding"]
    labels = {"direction": "outbound", "trace": "relay-inference", "action": "exempt"}
    assert gateway.metrics.registry.get_sample_value("govmilter_forwarding_detected_total", labels)


def test_cron_mail_from_the_gateway_is_not_refused(gateway: Harness) -> None:
    result = gateway.scan(CRON, mail_from="root@gw1.bacninh.gov.vn", rcpts=["admin@example.net"], client_ip="127.0.0.1")
    assert result.verdict.action is Action.ACCEPT


def test_the_same_forward_from_a_mailbox_server_is_still_refused(gateway: Harness) -> None:
    result = gateway.scan(ALERT, mail_from="alerts@monitoring.example.com", rcpts=["oncall@example.net"],
                          client_ip="127.0.0.4")  # fmt: skip
    assert result.verdict.action is Action.REJECT and result.verdict.rule == "outbound-relay-inference"


def test_even_a_decisive_trace_from_the_gateway_host_is_only_recorded(gateway: Harness) -> None:
    path = MESSAGES / "forwarding" / "out-srs0.eml"
    sender = "SRS0=hK3f=TT=example.com=partner@bacninh.gov.vn"
    on_gateway = gateway.scan(path, mail_from=sender, rcpts=["ban.cua.a@gmail.com"], client_ip="127.0.0.1")
    assert on_gateway.verdict.action is Action.ACCEPT
    from_relay = gateway.scan(path, mail_from=sender, rcpts=["ban.cua.a@gmail.com"], client_ip="127.0.0.4")
    assert from_relay.verdict.action is Action.REJECT and from_relay.verdict.rule == "outbound-srs"


def test_the_gateway_host_is_configurable_and_empty_means_none(gateway: Harness) -> None:
    none = Harness(["network.gateway_host=[]", RELAYS], skip=ONLY_FORWARDING)
    result = none.scan(ALERT, mail_from="alerts@monitoring.example.com", rcpts=["oncall@example.net"],
                       client_ip="127.0.0.1")  # fmt: skip
    assert result.verdict.action is Action.REJECT
